"""The built SD image under QEMU, for the slow image tests (test_image_boot.py, test_update_image.py).

The image boots as the Pi boots it: U-Boot (Debian's u-boot-qemu for ``-M virt``) runs boot.scr from the FAT
partition, which picks slot A or B by RAUC's boot counters. The guest's network is QEMU's user-mode network
with ``restrict=on``: it reaches nothing but a Kamailio on this machine (one guestfwd address) and, when asked
for, this machine reaches its SSH server through one forwarded port on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.peers.kamailio import Kamailio

from .conftest import REPO

GUEST_PROXY = "10.0.2.100"  # the guest's address for the Kamailio on this machine (guestfwd)
BOOT_TIMEOUT_S = float(os.environ.get("FIRMWARE_APP_BOOT_TIMEOUT", "900"))
BUILD_TIMEOUT_S = 3 * 3600
USER, PASSWORD = "1000", "image-test-secret"
UBOOT = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
#: Kernel arguments the boot script adds from firmware-bootargs.txt: the services' lines on the console.
BOOTARGS_EXTRA = "systemd.journald.forward_to_console=1"
_built: dict[str, Path] = {}


class GuestKamailio(Kamailio):
    """Kamailio that is also "myself" at the address and port the guest sends its REGISTER to."""

    def _render_config(self, db_dir: Path) -> str:
        text = super()._render_config(db_dir)
        patched = text.replace("auto_aliases=no", f"auto_aliases=no\nalias={GUEST_PROXY}:{self.port}", 1)
        assert patched != text, "the Kamailio template no longer sets auto_aliases=no"
        return patched


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}: apt-get install qemu-system-arm ipxe-qemu u-boot-qemu mtools "
                    "fdisk rauc squashfs-tools e2fsprogs (see image/README.md)")
    if not UBOOT.exists():
        pytest.skip(f"{UBOOT} is missing: apt-get install u-boot-qemu")


def built_image() -> Path:
    """FIRMWARE_APP_IMAGE as it is, or image/out/firmware-app-arm64.img built now (once per test session)."""
    given = os.environ.get("FIRMWARE_APP_IMAGE")
    if given:
        return Path(given)
    if "image" in _built:
        return _built["image"]
    if os.geteuid() != 0:
        pytest.skip("building the image needs root (or set FIRMWARE_APP_IMAGE to a built image)")
    require("mmdebstrap", "mke2fs", "mkfs.vfat", "mcopy", "sfdisk", "mkimage", "mkenvimage", "rauc")
    out = REPO / "image/out/firmware-app-arm64.img"
    started = time.monotonic()
    subprocess.run(["nice", "-n", "19", str(REPO / "image/build-image.sh"), str(out)], check=True,
                   timeout=BUILD_TIMEOUT_S)
    print(f"image built in {time.monotonic() - started:.0f} s: {out} ({out.stat().st_size >> 20} MiB), "
          f"bundle {out.with_suffix('.raucb').stat().st_size >> 20} MiB")
    _built["image"] = out
    return out


def partitions(disk: Path) -> list[dict[str, int]]:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True,
                                      check=True).stdout)
    return table["partitiontable"]["partitions"]


def fat(disk: Path) -> str:
    """The mtools image spec of the boot partition (the first): PATH@@OFFSET."""
    return f"{disk}@@{partitions(disk)[0]['start'] * 512}"


def fat_files(disk: Path) -> list[str]:
    listing = subprocess.run(["mdir", "-b", "-i", fat(disk), "::/"], capture_output=True, text=True, check=True)
    return [line.removeprefix("::/") for line in listing.stdout.split()]


def boot_counters(disk: Path, tmp_path: Path) -> dict[str, str]:
    """BOOT_ORDER, BOOT_A_LEFT, BOOT_B_LEFT from the card's firmware-boot.env, read as RAUC reads them."""
    copy = tmp_path / "firmware-boot.env"
    subprocess.run(["mcopy", "-o", "-i", fat(disk), "::/firmware-boot.env", str(copy)], check=True)
    (tmp_path / "fw_env.config").write_text(f"{copy} 0x0000 0x4000\n")
    done = subprocess.run(["fw_printenv", "-c", str(tmp_path / "fw_env.config")], capture_output=True, text=True,
                          check=True)
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def make_card(image: Path, tmp_path: Path, kamailio: Kamailio, *, ssh_key: str | None = None) -> Path:
    """A copy of the image, 512 MiB larger than it (the data partition must grow into that), with the
    person's two files on its boot partition and the console's kernel arguments."""
    disk = tmp_path / "card.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True)
    with disk.open("r+b") as f:
        f.truncate(disk.stat().st_size + (512 << 20))
    keys = f"ssh_authorized_keys = [{json.dumps(ssh_key)}]\n" if ssh_key else ""
    settings = tmp_path / "firmware-app.toml"
    settings.write_text(f"""\
[device]
hostname = "phone-under-test"
{keys}
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
    bootargs = tmp_path / "firmware-bootargs.txt"
    bootargs.write_text(f"bootargs_extra={BOOTARGS_EXTRA}\n")
    subprocess.run(["mcopy", "-o", "-i", fat(disk), str(settings), str(secrets), str(bootargs), "::/"], check=True)
    return disk


class Guest:
    """One QEMU machine booting ``disk`` through U-Boot; the console (all boots) in ``console``."""

    def __init__(self, disk: Path, tmp_path: Path, kamailio: Kamailio, *, ssh_port: int | None = None,
                 reboot: bool = False) -> None:
        self.console = tmp_path / "console.log"
        self.monitor = tmp_path / "monitor.sock"
        net = f"user,id=net,restrict=on,guestfwd=tcp:{GUEST_PROXY}:{kamailio.port}-tcp:127.0.0.1:{kamailio.port}"
        if ssh_port:
            net += f",hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
        # acpi=off: with firmware (-bios) QEMU makes the power button an ACPI device, which a kernel booted
        # with a device tree does not see; without ACPI it is the device tree's gpio-keys (power_off()).
        argv = ["nice", "-n", "19", "qemu-system-aarch64", "-M", "virt,acpi=off", "-cpu", "cortex-a72", "-smp", "2",
                "-m", "1024", "-bios", str(UBOOT), "-drive", f"file={disk},format=raw,if=virtio",
                "-device", "i6300esb", "-netdev", net, "-device", "virtio-net-pci,netdev=net",
                "-device", "qemu-xhci,id=xhci",  # a USB host controller, for a stick plugged in later
                "-display", "none", "-serial", f"file:{self.console}",
                "-monitor", f"unix:{self.monitor},server,nowait"]
        if not reboot:
            argv.append("-no-reboot")  # a reset (the boot script's, panic=10's, the watchdog's) ends the test
        self.qemu = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.started = time.monotonic()

    def text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def mark(self) -> int:
        """Where the console is now: wait_for(..., after=mark) looks only at what comes later."""
        return len(self.text())

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def wait_for(self, pattern: str, what: str, *, after: int = 0, timeout: float = BOOT_TIMEOUT_S) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text()[after:])
            if found:
                return found
            if self.qemu.poll() is not None:
                pytest.fail(f"QEMU exited ({self.qemu.returncode}) before {what}: "
                            f"{self.qemu.stderr.read().decode() if self.qemu.stderr else ''}\n{self.text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {timeout:.0f} s; console:\n{self.text()[-4000:]}")
            time.sleep(1)

    def wait_registered(self, kamailio: Kamailio, what: str, timeout: float = BOOT_TIMEOUT_S) -> list[str]:
        """The phone's contacts at Kamailio once it is registered."""
        deadline = time.monotonic() + timeout
        while not (contacts := kamailio.contacts(USER)):
            if self.qemu.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{USER} never registered ({what}); console:\n{self.text()[-4000:]}")
            time.sleep(1)
        return contacts

    def monitor_command(self, command: str) -> str:
        """One QEMU monitor command; what the monitor answered."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.monitor))
            _read_until(s, b"(qemu) ")  # the greeting: the monitor reads commands only after it
            s.sendall(command.encode() + b"\n")
            return _read_until(s, b"(qemu) ")

    def plug_usb_stick(self, image: Path) -> None:
        """A USB stick holding ``image`` (a file system image) plugged into the running machine."""
        for command in (f"drive_add 0 if=none,id=stick,format=raw,file={image}",
                        "device_add usb-storage,bus=xhci.0,drive=stick,id=stick-device"):
            answer = self.monitor_command(command)
            assert "rror" not in answer and "could not" not in answer.lower(), f"{command}: {answer}"

    def power_off(self) -> None:
        """ACPI-less power button (the virt machine's GPIO key): systemd stops the phone, which un-REGISTERs."""
        if self.qemu.poll() is None:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(10)
                    s.connect(str(self.monitor))
                    _read_until(s, b"(qemu) ")  # the greeting: the monitor reads commands only after it
                    s.sendall(b"system_powerdown\n")
                    _read_until(s, b"(qemu) ")  # the command ran
                self.qemu.wait(timeout=180)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()

    def kill(self) -> None:
        if self.qemu.poll() is None:
            self.qemu.kill()
            self.qemu.wait(timeout=30)


def failed_units(console: str) -> str:
    return "\n".join(line for line in console.splitlines() if "Failed to start" in line)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_until(sock: socket.socket, marker: bytes) -> str:
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")
