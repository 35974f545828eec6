"""The SD image, built and booted for real (slow, opt-in):

    sudo .venv/bin/python -m pytest -m slow tests/device/test_image_boot.py

builds image/out/firmware-app-arm64.img with image/build-image.sh (or boots FIRMWARE_APP_IMAGE=PATH as it
is), puts a settings file and a secrets file on a copy's boot partition with mtools, and boots the copy under
qemu-system-aarch64 -M virt (the image's own kernel and initramfs, read from its boot partition). The phone
reaches a Kamailio on this machine through QEMU's user-mode network: the guest is isolated (restrict=on)
but for one forwarded TCP address, so nothing but the phone's SIP traffic leaves it. Asserts: provisioning
installed the settings and removed the secret from the card, the root file system grew, machine id and SSH
host keys were made on this boot, the phone's unit reported READY=1 (systemd prints "Started" for a
Type=notify unit only then), the phone registered, and on power-off it un-REGISTERed and stopped cleanly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.kamailio import Kamailio

from .conftest import REPO

pytestmark = pytest.mark.slow

GUEST_PROXY = "10.0.2.100"  # the guest's address for the Kamailio on this machine (guestfwd)
BOOT_TIMEOUT_S = float(os.environ.get("FIRMWARE_APP_BOOT_TIMEOUT", "900"))
BUILD_TIMEOUT_S = 3 * 3600
USER, PASSWORD = "1000", "image-test-secret"


class GuestKamailio(Kamailio):
    """Kamailio that is also "myself" at the address and port the guest sends its REGISTER to."""

    def _render_config(self, db_dir: Path) -> str:
        text = super()._render_config(db_dir)
        patched = text.replace("auto_aliases=no", f"auto_aliases=no\nalias={GUEST_PROXY}:{self.port}", 1)
        assert patched != text, "the Kamailio template no longer sets auto_aliases=no"
        return patched


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}: apt-get install qemu-system-arm ipxe-qemu mtools fdisk (see image/README.md)")


@pytest.fixture(scope="module")
def image() -> Path:
    given = os.environ.get("FIRMWARE_APP_IMAGE")
    if given:
        return Path(given)
    if os.geteuid() != 0:
        pytest.skip("building the image needs root (or set FIRMWARE_APP_IMAGE to a built image)")
    _require("mmdebstrap", "mke2fs", "mkfs.vfat", "mcopy", "sfdisk")
    out = REPO / "image/out/firmware-app-arm64.img"
    started = time.monotonic()
    subprocess.run(["nice", "-n", "19", str(REPO / "image/build-image.sh"), str(out)], check=True,
                   timeout=BUILD_TIMEOUT_S)
    print(f"image built in {time.monotonic() - started:.0f} s: {out} ({out.stat().st_size >> 20} MiB)")
    return out


def _partitions(disk: Path) -> list[dict[str, int]]:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True,
                                      check=True).stdout)
    return table["partitiontable"]["partitions"]


def _fat(disk: Path) -> str:
    """The mtools image spec of the boot partition (the first): PATH@@OFFSET."""
    return f"{disk}@@{_partitions(disk)[0]['start'] * 512}"


def _fat_files(disk: Path) -> list[str]:
    listing = subprocess.run(["mdir", "-b", "-i", _fat(disk), "::/"], capture_output=True, text=True, check=True)
    return [line.removeprefix("::/") for line in listing.stdout.split()]


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[Kamailio]:
    _require("kamailio", "kamcmd")
    with GuestKamailio(tmp_path / "kamailio", {USER: PASSWORD}) as proxy:
        yield proxy


def test_the_image_boots_provisions_itself_and_registers(image: Path, kamailio: Kamailio, tmp_path: Path) -> None:
    _require("qemu-system-aarch64", "mcopy", "mdir", "sfdisk")
    disk = tmp_path / "card.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True)
    original_size = disk.stat().st_size
    with disk.open("r+b") as f:  # a "card" larger than the image: the root file system must grow into it
        f.truncate(original_size + (512 << 20))

    # The person's part: two files on the boot partition.
    settings = tmp_path / "firmware-app.toml"
    settings.write_text(f"""\
[device]
hostname = "phone-under-test"

[account]
registrar = "{GUEST_PROXY}:{kamailio.port}"
domain = "{kamailio.domain}"
user = "{USER}"
transport = "tcp"
reg_expiry = 120

[hfp]
[usb_headset]
""")
    secrets = tmp_path / "firmware-app-secrets.toml"
    secrets.write_text(f'password = "{PASSWORD}"\n')
    fat = _fat(disk)
    subprocess.run(["mcopy", "-o", "-i", fat, str(settings), str(secrets), "::/"], check=True)

    # Boot the image's own kernel and initramfs (what the Pi's firmware would load from the same partition).
    files = _fat_files(disk)
    kernel = next(f for f in files if f.startswith("vmlinuz-"))
    initrd = next(f for f in files if f.startswith("initrd.img-"))
    subprocess.run(["mcopy", "-i", fat, f"::/{kernel}", f"::/{initrd}", str(tmp_path)], check=True)
    assert (tmp_path / initrd).stat().st_size < 16 << 20, "the initramfs is not small (MODULES=list)"

    console = tmp_path / "console.log"
    monitor = tmp_path / "monitor.sock"
    qemu = subprocess.Popen(
        ["nice", "-n", "19", "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024",
         "-kernel", str(tmp_path / kernel), "-initrd", str(tmp_path / initrd),
         "-append", "root=LABEL=RASPIROOT rw rootwait console=ttyAMA0 systemd.journald.forward_to_console=1",
         "-drive", f"file={disk},format=raw,if=none,id=card", "-device", "virtio-blk-pci,drive=card",
         "-netdev", f"user,id=net,restrict=on,guestfwd=tcp:{GUEST_PROXY}:{kamailio.port}-tcp:127.0.0.1:{kamailio.port}",
         "-device", "virtio-net-pci,netdev=net",
         "-display", "none", "-serial", f"file:{console}", "-monitor", f"unix:{monitor},server,nowait",
         "-no-reboot"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    started = time.monotonic()

    def text() -> str:
        return console.read_text(errors="replace") if console.exists() else ""

    def wait_for(pattern: str, what: str) -> float:
        while not re.search(pattern, text()):
            if qemu.poll() is not None:
                pytest.fail(f"QEMU exited ({qemu.returncode}) before {what}: {qemu.stderr.read().decode()}\n"
                            f"{text()[-4000:]}")
            if time.monotonic() - started > BOOT_TIMEOUT_S:
                pytest.fail(f"no {what} after {BOOT_TIMEOUT_S:.0f} s; console:\n{text()[-4000:]}")
            time.sleep(1)
        return time.monotonic() - started

    try:
        t_provisioned = wait_for(r"firmware-provision: applied: installed /etc/firmware-app/config.toml",
                                 "provisioning")
        t_ready = wait_for(r"Started .*firmware-app\.service", "READY=1 from the phone")
        contacts: list[str] = []
        while not contacts:
            contacts = kamailio.contacts(USER)
            if not contacts:
                wait_for_nothing = qemu.poll() is not None or time.monotonic() - started > BOOT_TIMEOUT_S
                assert not wait_for_nothing, f"{USER} never registered; console:\n{text()[-4000:]}"
                time.sleep(1)
        t_registered = time.monotonic() - started
        print(f"provisioned after {t_provisioned:.0f} s, READY after {t_ready:.0f} s, "
              f"registered after {t_registered:.0f} s: {contacts}")
        assert any("transport=tcp" in c.lower() for c in contacts)
        wait_for(r"growroot: /dev/\S+ now fills", "the root file system's growth")
        # Per-device identity made on this first boot, none carried by the image.
        assert "Initializing machine ID from random generator" in text()
        assert re.search(r"Finished .*firmware-ssh-hostkeys\.service", text())
        # The headset plugins run on a device with neither a Bluetooth adapter nor a USB headset: said once.
        wait_for(r"hfp: bluealsa is not running", "the Bluetooth headset plugin's start")
        wait_for(r"usb_headset headset: missing", "the USB headset plugin's start")
        assert "firmware" not in _failed_units(text())
        assert "ordering cycle" not in text()
    finally:
        _power_off(qemu, monitor)

    # A clean shutdown: systemd stopped the phone (SIGTERM), which un-REGISTERed and exited 0.
    assert re.search(r"Stopped .*firmware-app\.service", text()), text()[-3000:]
    assert not re.search(r"firmware-app\.service: (Main process exited|Failed)", text())
    assert kamailio.contacts(USER) == [], "the phone did not un-REGISTER when the device shut down"
    # The secret is gone from the card, the settings are still there.
    files = _fat_files(disk)
    assert "firmware-app-secrets.toml" not in files
    assert "firmware-app.toml" in files


def _failed_units(console: str) -> str:
    return "\n".join(line for line in console.splitlines() if "Failed to start" in line)


def _power_off(qemu: subprocess.Popen[bytes], monitor: Path) -> None:
    """ACPI-less power button (the virt machine's GPIO key): systemd stops the phone, which un-REGISTERs."""
    if qemu.poll() is None:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(str(monitor))
                _read_until(s, b"(qemu) ")  # the greeting: the monitor reads commands only after it
                s.sendall(b"system_powerdown\n")
                _read_until(s, b"(qemu) ")  # the command ran
            qemu.wait(timeout=180)
        except (OSError, subprocess.TimeoutExpired):
            qemu.kill()
            qemu.wait(timeout=30)


def _read_until(sock: socket.socket, marker: bytes) -> None:
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return
        data += chunk
