"""A/B updates of the SD image under QEMU, for real (slow, opt-in):

    sudo .venv/bin/python -m pytest -m slow tests/device/test_update_image.py -s

Builds the image and its bundle with image/build-image.sh (or takes FIRMWARE_APP_IMAGE=PATH and the bundle
beside it, PATH with .raucb, signed under FIRMWARE_APP_RAUC_KEYS=DIR's ca.cert.pem, default the build's
development keys in /var/cache/firmware-app/rauc-dev-keys). From the bundle's own root file system it makes
two more bundles, only a file changed in each (debugfs, no second image build): a newer version, and a newer
version whose phone cannot start (its firmware-app command fails on purpose); and a bundle signed by a CA the
image does not trust. One card boots through U-Boot and registers on slot A; bundles reach it as a
technician's would: over SSH (one port forwarded to 127.0.0.1, root's key from [device] ssh_authorized_keys)
for ``firmware-app update FILE``, or on a USB stick plugged into the running machine (QEMU's xhci):

1. the foreign bundle (SSH) is refused with the signature's reason, nothing changes;
2. the newer bundle (USB stick: udev, firmware-update-usb@sda.service in its sandbox) goes into slot B, the
   device restarts into B, the phone registers there, RAUC marks B good (rauc status, the counters in
   firmware-boot.env), the device keeps its machine id and SSH host key, and the stick left in does nothing
   more;
3. the broken bundle (SSH) goes into slot A, the device restarts into A, where the health check fails and reboots
   it until A's tries are used up, and U-Boot falls back to B, where the phone registers again.

Printed: image and bundle sizes, the time from "update" to registered on the new slot, the fallback time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.kamailio import Kamailio

from .conftest import REPO
from .image_guest import (
    PASSWORD,
    USER,
    Guest,
    GuestKamailio,
    boot_counters,
    built_image,
    free_port,
    make_card,
    require,
)

pytestmark = pytest.mark.slow

KEYS = Path(os.environ.get("FIRMWARE_APP_RAUC_KEYS", "/var/cache/firmware-app/rauc-dev-keys"))
BROKEN_APP = '#!/bin/sh\necho "firmware-app: broken on purpose by test_update_image" >&2\nexit 1\n'


def say(text: str) -> None:
    print(text, flush=True)


def _mib(path: Path) -> str:
    return f"{path.stat().st_size / (1 << 20):.0f} MiB"


@pytest.fixture(scope="module")
def image() -> Path:
    return built_image()


@pytest.fixture(scope="module")
def bundles(image: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The image's own bundle, and the three made from its root file system."""
    require("rauc", "mksquashfs", "debugfs", "openssl")
    shipped = image.with_suffix(".raucb")
    assert shipped.exists(), f"no bundle beside the image: {shipped}"
    work = tmp_path_factory.mktemp("bundles")
    conf_root = work / "conf"
    conf_root.mkdir()
    keyring = KEYS / "ca.cert.pem"
    subprocess.run([str(REPO / "image/rauc/system.conf.sh"), "--data-directory", str(work / "rauc-data"),
                    str(keyring), str(conf_root)], check=True, capture_output=True)
    conf = ["--conf", str(conf_root / "etc/rauc/system.conf"), "--keyring", str(keyring)]
    info = json.loads(subprocess.run(["rauc", *conf, "info", "--output-format=json", str(shipped)],
                                     check=True, capture_output=True, text=True).stdout)
    version = info["version"]
    subprocess.run(["rauc", *conf, "extract", str(shipped), str(work / "content")], check=True, capture_output=True)
    rootfs = work / "content/rootfs.ext4"

    def variant(name: str, new_version: str, *, broken: bool = False, signer: Path = KEYS,
                small: bool = False) -> Path:
        ext4 = work / f"{name}.ext4"
        if small:  # refused before anything is written: a small root file system makes the point quicker
            (work / "small").mkdir(exist_ok=True)
            (work / "small/usr/lib/firmware-app").mkdir(parents=True, exist_ok=True)
            # rauc refuses a bundle whose squashfs is not above 4 KiB: something that does not compress
            (work / "small/usr/lib/firmware-app/filler").write_bytes(os.urandom(64 << 10))
            subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(work / "small"), str(ext4), "8M"], check=True)
        else:
            subprocess.run(["cp", "--sparse=always", str(rootfs), str(ext4)], check=True)
        (work / "image-version").write_text(f"{new_version}\n")
        (work / "broken").write_text(BROKEN_APP)
        (work / "broken").chmod(0o755)
        commands = ["rm /usr/lib/firmware-app/image-version",  # (absent in the small one: debugfs goes on)
                    f"write {work / 'image-version'} /usr/lib/firmware-app/image-version"]
        if broken:
            commands += ["rm /opt/firmware-app/bin/firmware-app", f"write {work / 'broken'} /opt/firmware-app/bin/firmware-app"]
        subprocess.run(["debugfs", "-w", "-f", "-", str(ext4)], input="\n".join(commands) + "\n", text=True,
                       check=True, capture_output=True)
        out = work / f"{name}.raucb"
        subprocess.run([str(REPO / "image/rauc/build-bundle.sh"), "--rootfs", str(ext4), "--version", new_version,
                        "--cert", str(signer / "signer.cert.pem"), "--key", str(signer / "signer.key.pem"), str(out)],
                       check=True, capture_output=True)
        ext4.unlink()
        return out

    started = time.monotonic()
    other_keys = work / "other-keys"
    subprocess.run([str(REPO / "image/rauc/make-keys.sh"), str(other_keys), "someone else"], check=True,
                   capture_output=True, env={**os.environ, "RAUC_KEY_BITS": "2048"})
    made = {
        "shipped": shipped,
        "newer": variant("newer", f"{version}.update1"),
        "broken": variant("broken", f"{version}.broken1", broken=True),
        "foreign": variant("foreign", f"{version}.foreign1", signer=other_keys, small=True),
    }
    say(f"bundles made in {time.monotonic() - started:.0f} s from {version}: "
          + ", ".join(f"{k} {_mib(v)}" for k, v in made.items()))
    return made


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[Kamailio]:
    require("kamailio", "kamcmd")
    with GuestKamailio(tmp_path / "kamailio", {USER: PASSWORD}) as proxy:
        yield proxy


class Ssh:
    """root@guest through the forwarded port, with the key the settings file authorized."""

    def __init__(self, key: Path, port: int) -> None:
        self.argv = ["ssh", "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=no",
                     "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
                     "-o", "LogLevel=ERROR", "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3",
                     "root@127.0.0.1"]

    def run(self, command: str, *, stdin: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        if stdin is None:
            return subprocess.run([*self.argv, command], capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        with stdin.open("rb") as f:
            done = subprocess.run([*self.argv, command], capture_output=True, timeout=timeout, stdin=f)
        return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                           done.stderr.decode(errors="replace"))

    def wait(self, guest: Guest, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.run("true", timeout=60).returncode != 0:
            if guest.qemu.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no SSH into the guest; console:\n{guest.text()[-3000:]}")
            time.sleep(3)

    def upload(self, bundle: Path) -> str:
        target = f"/var/lib/firmware-update/{bundle.name}"
        started = time.monotonic()
        done = self.run(f"cat > {target}.part && mv {target}.part {target}", stdin=bundle)
        assert done.returncode == 0, done.stderr
        say(f"{bundle.name}: {_mib(bundle)} copied in {time.monotonic() - started:.0f} s")
        return target

    def rauc_status(self) -> dict:
        done = self.run("rauc status --detailed --output-format=json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def _slot(status: dict, bootname: str) -> dict:
    for entry in status["slots"]:
        (name, slot), = entry.items()
        if slot.get("bootname") == bootname:
            return slot
    raise AssertionError(f"no slot {bootname} in {status}")


def _usb_stick(bundle: Path, tmp_path: Path) -> Path:
    """A FAT32 stick image (no partition table, as many sticks are formatted) with the bundle at its top."""
    stick = tmp_path / "usb-stick.img"
    size_kib = bundle.stat().st_size // 1024 + (64 << 10)
    subprocess.run(["mkfs.vfat", "-F", "32", "-n", "UPDATE", "-C", str(stick), str(size_kib)], check=True,
                   capture_output=True)
    subprocess.run(["mcopy", "-i", str(stick), str(bundle), "::/firmware-app-update.raucb"], check=True)
    return stick


def test_update_to_the_other_slot_falls_back_from_a_broken_one_and_refuses_a_foreign_bundle(
        image: Path, bundles: dict[str, Path], kamailio: Kamailio, tmp_path: Path) -> None:
    require("qemu-system-aarch64", "mcopy", "ssh", "ssh-keygen", "fw_printenv")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "image-test", "-f", str(key)], check=True)
    disk = make_card(image, tmp_path, kamailio, ssh_key=(tmp_path / "id_ed25519.pub").read_text().strip())
    say(f"image {_mib(image)} (sparse: {os.stat(image).st_blocks * 512 >> 20} MiB allocated), "
          f"bundle {_mib(bundles['shipped'])}")
    port = free_port()
    guest = Guest(disk, tmp_path, kamailio, ssh_port=port, reboot=True)
    ssh = Ssh(key, port)
    test_started = time.monotonic()
    try:
        # Slot A: registered and marked good.
        guest.wait_for(r"firmware-slot: marked good: A ", "slot A marked good")
        guest.wait_registered(kamailio, "slot A")
        say(f"slot A registered and marked good after {guest.elapsed():.0f} s")
        ssh.wait(guest)
        version_a = ssh.run("cat /usr/lib/firmware-app/image-version").stdout.strip()
        identity = ssh.run("cat /etc/machine-id /etc/ssh/ssh_host_ed25519_key.pub").stdout
        status = ssh.rauc_status()
        assert status["booted"] == "A", status
        assert _slot(status, "A")["boot_status"] == "good"

        # 1. A bundle signed by another CA: refused with the reason, nothing installed, no restart.
        target = ssh.upload(bundles["foreign"])
        done = ssh.run(f"/opt/firmware-app/bin/firmware-app update {target}")
        say(f"foreign bundle: exit {done.returncode}: {done.stderr.strip()[-400:]}")
        assert done.returncode == 1, done.stdout + done.stderr
        assert re.search(r"refused: .*signature", done.stderr, re.IGNORECASE), done.stderr
        assert ssh.rauc_status()["booted"] == "A"
        ssh.run(f"rm -f {target}")

        # 2. The newer bundle on a USB stick, plugged in as a technician would: udev starts
        #    firmware-update-usb@sda.service (its sandbox, its mount), which installs it into B; the device
        #    restarts into B, the phone registers there, B is marked good.
        stick = _usb_stick(bundles["newer"], tmp_path)
        mark = guest.mark()
        t_update = time.monotonic()
        guest.plug_usb_stick(stick)
        guest.wait_for(r"firmware-update: rebooting: into version", "the USB stick's update to restart the device",
                       after=mark, timeout=1200)
        t_installed = time.monotonic() - t_update
        say(f"newer bundle from the USB stick: checked, copied, installed and reboot issued {t_installed:.0f} s "
            "after it was plugged in")
        guest.wait_for(r"Kernel command line: .*root=PARTUUID=5e1f0001-03 .*rauc\.slot=B", "slot B's kernel",
                       after=mark)
        t_booted = time.monotonic() - t_update
        on_b = guest.mark()
        # QEMU's guestfwd is one connection to Kamailio for all boots: the binding looks the same, so the
        # phone's own "registered" (the registrar's 200 OK) on this boot tells, with Kamailio's binding.
        guest.wait_for(r"Started .*firmware-app\.service", "READY=1 on slot B", after=on_b)
        guest.wait_for(r"firmware_app\.phone: registered as", "registered on slot B", after=on_b)
        assert guest.wait_registered(kamailio, "slot B")
        t_registered = time.monotonic() - t_update
        guest.wait_for(r"firmware-slot: marked good: B ", "slot B marked good", after=mark)
        t_good = time.monotonic() - t_update
        say(f"update to B: installed (rauc install + reboot issued) in {t_installed:.0f} s, slot B's kernel after "
              f"{t_booted:.0f} s, registered on B {t_registered:.0f} s after \"update\", marked good after {t_good:.0f} s")
        ssh.wait(guest)
        assert ssh.run("cat /usr/lib/firmware-app/image-version").stdout.strip() == f"{version_a}.update1"
        status = ssh.rauc_status()
        assert status["booted"] == "B", status
        assert _slot(status, "B")["boot_status"] == "good", status
        # The settings, secrets and SSH key came along on the data partition: provisioning had nothing to do.
        assert ssh.run("test -s /etc/firmware-app/secrets.toml").returncode == 0
        # The device is the same device: machine id and SSH host key carried into B (rauc-post-install).
        assert ssh.run("cat /etc/machine-id /etc/ssh/ssh_host_ed25519_key.pub").stdout == identity
        # The stick is still in: on B its version runs, so it is only looked at (nothing copied or installed).
        guest.wait_for(r"firmware-update: current: version \S+ \(on /dev/sda\) already runs", "the stick left alone on B",
                       after=on_b)

        say("slot B checked: version, rauc status, identity, settings on the data partition, the stick left alone")

        # 3. The broken bundle: into A; A's phone never works, so A's tries run out and U-Boot boots B again.
        target = ssh.upload(bundles["broken"])
        mark = guest.mark()
        t_update = time.monotonic()
        done = ssh.run(f"/opt/firmware-app/bin/firmware-app update {target}", timeout=1200)
        assert done.returncode in (0, 255), done.stdout + done.stderr
        say(f"broken bundle: firmware-app update exit {done.returncode} after {time.monotonic() - t_update:.0f} s")
        guest.wait_for(r"Kernel command line: .*rauc\.slot=A", "the broken slot A's kernel", after=mark)
        t_broken_boot = time.monotonic() - t_update
        guest.wait_for(r"firmware-boot: slot A \(order A B, tries left A 0 B \d\)", "A's last try", after=mark,
                       timeout=1800)
        fallback_mark = guest.mark()
        guest.wait_for(r"firmware-boot: slot B ", "the fall back to B", after=fallback_mark, timeout=900)
        t_fallback = time.monotonic() - t_update
        guest.wait_for(r"Started .*firmware-app\.service", "READY=1 on B after the fall back", after=fallback_mark)
        guest.wait_for(r"firmware_app\.phone: registered as", "registered on B after the fall back",
                       after=fallback_mark)
        assert guest.wait_registered(kamailio, "slot B after the fall back")
        t_registered_again = time.monotonic() - t_update
        text = guest.text()[mark:]
        failures = len(re.findall(r"Failed to start .*firmware-app-health\.service", text))
        say(f"broken update: A's kernel {t_broken_boot:.0f} s after \"update\", {failures} failed health checks, "
              f"back on B after {t_fallback:.0f} s, registered on B {t_registered_again:.0f} s after \"update\"")
        assert failures == 3, f"A's three tries should each fail the health check; console:\n{text[-3000:]}"
        assert "broken on purpose" in text
        ssh.wait(guest)
        assert ssh.run("cat /usr/lib/firmware-app/image-version").stdout.strip() == f"{version_a}.update1"
        status = ssh.rauc_status()
        assert status["booted"] == "B", status
        say(f"whole update test after {time.monotonic() - test_started:.0f} s; "
              f"rauc status: {json.dumps(status)[:600]}")
    finally:
        guest.power_off()
    say(f"boot counters at the end: {boot_counters(disk, tmp_path)}")
