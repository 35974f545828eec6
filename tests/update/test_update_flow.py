"""``firmware-app update`` and ``health`` on a phone: real bundles from image/rauc's scripts checked by the real
``rauc info``, real phones (through Kamailio) whose calls the update waits for, a real HTTPS download; only
``rauc install`` (it writes a root slot, which a test machine has not) and the reboot are stand-ins that
record what they were asked.

What the update promises: a bundle that is not signed by the device's keyring, is for other hardware or is
the version that runs is refused in one line and installs nothing; an update waits for the call to end and
gives up unchanged at its deadline; after the reboot, ``status`` says whether the new version came up or fell
back, and a version that fell back is not installed again from the provisioning server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from firmware_app import update
from firmware_app.errors import FirmwareAppError
from tests.device.conftest import Pki, ProvisioningServer
from tests.phone_process import PhoneProcess, wait

REPO = Path(__file__).resolve().parents[2]
RAUC = REPO / "image/rauc"
RUNNING, NEW = "1.0.0+20261101", "1.1.0+20261201"

pytestmark = pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v rauc mksquashfs"], capture_output=True).returncode != 0,
                                reason="rauc and squashfs-tools are missing: run tests/setup.sh")


@dataclass(frozen=True)
class Bundles:
    system_conf: Path
    good: Path  # NEW, signed by the device's keyring, for firmware-app-arm64
    same: Path  # RUNNING
    other_key: Path  # NEW, signed under another CA
    amd64: Path  # NEW, for other hardware
    ca: Path


def _sh(*argv: str | Path) -> None:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    assert done.returncode == 0, f"{argv}: {done.stderr}"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    d = tmp_path_factory.mktemp("bundles")
    _sh(RAUC / "make-keys.sh", d / "keys")
    _sh(RAUC / "make-keys.sh", d / "other-keys")
    payload = d / "root"
    (payload / "usr/lib/firmware-app").mkdir(parents=True)
    (payload / "usr/lib/firmware-app/filler").write_bytes(os.urandom(64 << 10))  # RAUC wants > 4 KiB
    rootfs = d / "rootfs.ext4"
    _sh("mke2fs", "-q", "-t", "ext4", "-d", payload, rootfs, "2M")
    device_root = d / "device"
    device_root.mkdir()
    _sh(RAUC / "system.conf.sh", d / "keys/ca.cert.pem", device_root)
    conf = device_root / "etc/rauc/system.conf"
    # On the device the keyring is /etc/rauc/keyring.pem; here, the copy beside this system.conf.
    conf.write_text(conf.read_text().replace("/etc/rauc/keyring.pem", str(device_root / "etc/rauc/keyring.pem")))

    def build(name: str, version: str, keys: str = "keys", compatible: str = "firmware-app-arm64") -> Path:
        out = d / f"{name}.raucb"
        _sh(RAUC / "build-bundle.sh", "--rootfs", rootfs, "--version", version, "--compatible", compatible,
            "--cert", d / keys / "signer.cert.pem", "--key", d / keys / "signer.key.pem", out)
        return out

    return Bundles(conf, build("good", NEW), build("same", RUNNING), build("other-key", NEW, keys="other-keys"),
                   build("amd64", NEW, compatible="firmware-app-amd64"), d / "keys/ca.cert.pem")


@dataclass
class Device:
    """The device as the updater sees it: its folders, and what its slot writer and reboot were asked."""

    root: Path
    device: update.Device
    installs: Path
    reboots: Path

    def updater(self, **kw: object) -> update.Updater:
        lines: list[str] = []
        updater = update.Updater(self.device, sleep=lambda s: time.sleep(0.05), say=lines.append, **kw)  # type: ignore[arg-type]
        updater.said = lines  # type: ignore[attr-defined]
        return updater

    def installed(self) -> list[str]:
        return self.installs.read_text().splitlines() if self.installs.exists() else []

    def rebooted(self) -> int:
        return len(self.reboots.read_text().splitlines()) if self.reboots.exists() else 0

    def status(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.device.status_file.read_text())

    def runs(self, version: str) -> None:
        self.device.version_file.write_text(version + "\n")


@pytest.fixture
def device(tmp_path: Path, bundles: Bundles) -> Device:
    root = tmp_path / "device"
    (root / "usr/lib/firmware-app").mkdir(parents=True)
    installs, reboots = root / "rauc-installs", root / "reboots"
    # The slot writer stands in for `rauc install` only: `rauc info` is the real one.
    rauc = root / "rauc"
    rauc.write_text(f'#!/bin/sh\nif [ "$1" = install ]; then echo "$2" >> {installs}; echo "Installing"; exit 0; fi\n'
                    'exec rauc "$@"\n')
    rauc.chmod(0o755)
    reboot = root / "reboot"
    reboot.write_text(f"#!/bin/sh\necho reboot >> {reboots}\n")
    reboot.chmod(0o755)
    d = update.Device(state_dir=root / "var/lib/firmware-update", version_file=root / "usr/lib/firmware-app/image-version",
                      system_conf=bundles.system_conf, socket=str(tmp_path / "no-phone.sock"), rauc=(str(rauc),),
                      reboot=(str(reboot),))
    dev = Device(root, d, installs, reboots)
    dev.runs(RUNNING)
    return dev


# --- what is installed, and what is refused -------------------------------------------------------------


def test_a_signed_bundle_for_this_phone_is_installed_and_the_phone_restarts_into_it(device: Device, bundles: Bundles) -> None:
    message = device.updater().install(str(bundles.good))

    assert message == f"version {NEW} installed: rebooting"
    assert device.installed() == [str(bundles.good)]
    assert device.rebooted() == 1
    assert device.status()["state"] == "rebooting" and device.status()["version"] == NEW
    assert bundles.good.exists(), "a bundle given by hand is the person's file: it stays"


@pytest.mark.parametrize(
    ("which", "says"),
    [
        ("other_key", "other-key.raucb: refused: signature verification failed"),
        ("amd64", "amd64.raucb: refused: the bundle is for 'firmware-app-amd64', this phone is 'firmware-app-arm64'"),
    ],
)
def test_a_bundle_signed_by_another_key_or_for_other_hardware_is_refused_in_one_line(
    device: Device, bundles: Bundles, which: str, says: str
) -> None:
    with pytest.raises(update.UpdateRefused) as refused:
        device.updater().install(str(getattr(bundles, which)))

    assert str(refused.value).startswith(says)
    assert "\n" not in str(refused.value)
    assert device.installed() == [] and device.rebooted() == 0
    assert device.status()["state"] == "refused"


def test_a_damaged_bundle_is_refused(device: Device, bundles: Bundles, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.raucb"
    damaged.write_bytes(bundles.good.read_bytes()[:4096])

    with pytest.raises(update.UpdateRefused, match=r"damaged\.raucb: refused: Invalid bundle format"):
        device.updater().install(str(damaged))
    assert device.installed() == []


def test_the_running_version_is_not_installed_again_unless_forced(device: Device, bundles: Bundles) -> None:
    device.updater().install(str(bundles.same))
    assert device.installed() == [] and device.status()["state"] == "current"

    device.updater(reboot=False).install(str(bundles.same), force=True)
    assert device.installed() == [str(bundles.same)] and device.rebooted() == 0


def test_a_plain_http_url_is_refused_before_anything_is_fetched(device: Device) -> None:
    with pytest.raises(update.UpdateRefused, match="only https:// URLs are fetched"):
        device.updater().install("http://127.0.0.1:9/x.raucb")


# --- from the provisioning server: HTTPS, the wanted version, and a version that fell back ----------------


@pytest.fixture
def https(bundles: Bundles, https_server: ProvisioningServer) -> Callable[[str], str]:
    """The provisioning tests' HTTPS server on 127.0.0.1 (its CA: ``pki.ca``), serving the bundles."""
    https_server.files.update({f"/{p.name}": p.read_bytes() for p in (bundles.good, bundles.other_key)})
    https_server.files["/moved.raucb"] = (302, "http://127.0.0.1:9/good.raucb")
    return lambda name: https_server.url(f"/{name}")


def test_a_bundle_is_downloaded_over_verified_https_installed_and_its_download_removed(
    device: Device, https: Callable[[str], str], pki: Pki
) -> None:
    with pytest.raises(FirmwareAppError, match="CERTIFICATE_VERIFY_FAILED"):
        device.updater().install(https("good.raucb"))  # the system's CAs do not know this server
    with pytest.raises(update.UpdateRefused, match="redirected to a non-HTTPS URL"):
        device.updater().install(https("moved.raucb"), ca_file=pki.ca)
    assert device.installed() == []

    device.updater().install(https("good.raucb"), ca_file=pki.ca)

    download = device.device.state_dir / "download.raucb"
    assert device.installed() == [str(download)]
    assert not download.exists(), "the downloaded bundle is removed once installed: the data partition is small"
    with pytest.raises(FirmwareAppError, match="the server answered 404"):
        device.updater().install(https("missing.raucb"), ca_file=pki.ca)


def _want(device: Device, version: str, url: str, ca: Path) -> None:
    device.device.state_dir.mkdir(parents=True, exist_ok=True)
    device.device.wanted_file.write_text(json.dumps({"version": version, "url": url, "ca_file": str(ca)}))


def test_the_wanted_version_comes_up_or_falls_back_and_is_then_not_retried(
    device: Device, https: Callable[[str], str], pki: Pki
) -> None:
    _want(device, NEW, https("good.raucb"), pki.ca)
    device.updater().install_wanted()
    assert len(device.installed()) == 1 and device.rebooted() == 1

    # The new slot came up: the next look says so, and there is nothing more to do.
    device.runs(NEW)
    assert device.updater().reconcile()["state"] == "updated"
    device.updater().install_wanted()
    assert device.status()["state"] == "current" and len(device.installed()) == 1

    # Another round, but the new slot never came up: U-Boot went back to the old one.
    device.runs(RUNNING)
    device.device.status_file.write_text(json.dumps({"state": "rebooting", "version": NEW}))
    status = device.updater().reconcile()
    assert status["state"] == "fell-back" and status["fell_back"] == [NEW]
    assert f"version {NEW} did not come up: back on {RUNNING}" in status["message"]

    device.updater().install_wanted()  # the hourly provisioning look asks again: not in a loop
    assert device.status()["state"] == "not-retried" and len(device.installed()) == 1
    assert device.status()["fell_back"] == [NEW], "the history survives the following states"


def test_a_wanted_version_whose_bundle_says_another_version_is_refused(
    device: Device, https: Callable[[str], str], pki: Pki
) -> None:
    _want(device, "1.2.0", https("good.raucb"), pki.ca)

    with pytest.raises(update.UpdateRefused, match=re.escape(f"the bundle is version {NEW}, provisioning wants 1.2.0")):
        device.updater().install_wanted()
    assert device.installed() == []


# --- never during a call ---------------------------------------------------------------------------------


@pytest.fixture
def in_a_call(phone_factory: Callable[..., PhoneProcess]) -> tuple[PhoneProcess, PhoneProcess]:
    """Phone 1000 (the one being updated) in a call with 1001, through Kamailio."""
    phone = phone_factory("updated", user="1000", password="pw1000").start()
    caller = phone_factory("caller", user="1001", password="pw1001").start()
    caller.cli("call", "1000")
    phone.wait_state("ringing")
    phone.cli("answer")
    phone.wait_state("in_call")
    return phone, caller


def test_an_update_waits_for_the_call_to_end_then_installs(
    device: Device, bundles: Bundles, in_a_call: tuple[PhoneProcess, PhoneProcess]
) -> None:
    phone, caller = in_a_call
    device.device.socket = str(phone.socket)
    updater = device.updater()
    done: list[str] = []
    worker = threading.Thread(target=lambda: done.append(updater.install(str(bundles.good))), daemon=True)
    worker.start()
    wait(lambda: device.device.status_file.exists() and device.status()["state"] == "waiting", 10, "the update to wait")

    assert "the phone is in call" in device.status()["message"]
    assert device.installed() == [], "nothing is installed during a call"
    phone.wait_state("in_call", timeout=1)  # the call goes on

    caller.cli("hangup")
    worker.join(timeout=20)

    assert done == [f"version {NEW} installed: rebooting"]
    assert device.installed() == [str(bundles.good)] and device.rebooted() == 1
    # The phone was told all along (its status LED, the fleet's telemetry): now it restarts into NEW.
    assert phone.status()["update"] == {"state": "rebooting", "detail": f"into version {NEW}"}
    def told() -> list[str]:
        return [e["state"] for e in phone.events if e.get("event") == "update"]

    expected = ["checking", "", "installing", "installed", "rebooting"]  # "" while it waited for the call
    wait(lambda: told() == expected, 5, f"the update's states {expected}, not {told()}")


def test_a_call_past_the_deadline_leaves_everything_as_it_was(
    device: Device, bundles: Bundles, in_a_call: tuple[PhoneProcess, PhoneProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    phone, _ = in_a_call
    device.device.socket = str(phone.socket)
    ticks = iter(range(1000))

    updater = update.Updater(device.device, idle_deadline_s=10, clock=lambda: float(next(ticks)) * 4,
                             sleep=lambda s: None, say=lambda line: None)
    with pytest.raises(update.UpdateDeferred, match=re.escape(f"in a call for 10 s: version {NEW} not installed")):
        updater.install(str(bundles.good))

    assert device.installed() == [] and device.rebooted() == 0
    assert device.status()["state"] == "deferred"
    phone.wait_state("in_call", timeout=1)

    # Installed, but the call never ends: no reboot, ever, during it; the new slot starts at the next one.
    updater.idle_deadline_s, updater.reboot_wait_s = 1e9, 10
    looks: list[str | None] = []

    def idle_then_the_call(socket: str) -> str | None:  # the look before installing finds no call, later ones do
        looks.append(None if not looks else real_state(socket))
        return "idle" if len(looks) == 1 else looks[-1]

    real_state = update.phone_state
    monkeypatch.setattr(update, "phone_state", idle_then_the_call)
    with pytest.raises(update.UpdateDeferred, match="installed, not started: the phone stayed in a call"):
        updater.install(str(bundles.good))
    assert looks[1:] and set(looks[1:]) == {"in_call"}
    assert device.installed() == [str(bundles.good)] and device.rebooted() == 0
    assert device.status()["state"] == "installed" and "starts at the next reboot" in device.status()["message"]


# --- health: what marks a new slot good -----------------------------------------------------------------


def test_health_is_a_phone_that_registered_or_that_its_registrar_answered(
    phone_factory: Callable[..., PhoneProcess], tmp_path: Path
) -> None:
    good = phone_factory("good", user="1002", password="pw1002").start()
    ok, why = update.health(str(good.socket), 10)
    assert ok and why.startswith("registered"), why

    # A wrong password is a configuration mistake, not a broken slot: the registrar answered.
    refused = phone_factory("refused", user="1003", password="wrong").start(registered=False)
    ok, why = update.health(str(refused.socket), 20)
    assert ok and why.startswith("the registrar answered 401"), why

    ok, why = update.health(str(tmp_path / "none.sock"), 0.5, sleep=lambda s: None)
    assert not ok and "the phone is not running" in why


def test_health_of_a_phone_whose_registrar_never_answers_is_no(phone_factory: Callable[..., PhoneProcess]) -> None:
    silent = phone_factory("silent", user="1004", password="pw1004", proxy=SimpleNamespace(domain="127.0.0.1:9"))
    silent.start(registered=False)

    ok, why = update.health(str(silent.socket), 3)

    assert not ok and why.startswith("not healthy after 3 s: registration "), why


# --- from a USB stick ------------------------------------------------------------------------------------


def test_a_usb_stick_updates_once_to_its_newest_bundle(device: Device, bundles: Bundles, tmp_path: Path) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    (stick / "notes.txt").write_text("not a bundle")
    old, new = stick / "firmware-app-old.raucb", stick / "firmware-app-new.raucb"
    old.write_bytes(bundles.same.read_bytes())
    new.write_bytes(bundles.good.read_bytes())
    os.utime(old, (1_700_000_000, 1_700_000_000))
    # Mounting is the kernel's part: the stand-in puts the stick's files at the mount point and takes them away.
    mount, umount = device.root / "mount", device.root / "umount"
    mount.write_text(f'#!/bin/sh\n[ "$1" = /dev/sdz1 ] && cp -p {stick}/* "$2"/\n')
    umount.write_text('#!/bin/sh\nrm -f "$1"/*\n')
    for script in (mount, umount):
        script.chmod(0o755)
    device.device.mount, device.device.umount = (str(mount),), (str(umount),)
    device.device.state_dir.mkdir(parents=True)

    device.updater().install_from_usb("/dev/sdz1")

    copy = device.device.state_dir / "usb.raucb"
    assert device.installed() == [str(copy)], "the copy on the data partition: the stick may be pulled out"
    assert not copy.exists() and device.rebooted() == 1
    assert sorted(p.name for p in stick.iterdir()) == ["firmware-app-new.raucb", "firmware-app-old.raucb", "notes.txt"]

    # The stick stays in: once its version runs, or after it fell back, plugging it in does nothing more.
    device.runs(NEW)
    device.updater().install_from_usb("/dev/sdz1")
    assert device.status()["state"] == "current" and len(device.installed()) == 1
    device.runs(RUNNING)
    device.device.status_file.write_text(json.dumps({"state": "rebooting", "version": NEW}))
    device.updater().install_from_usb("/dev/sdz1")
    assert device.status()["state"] == "not-retried" and len(device.installed()) == 1

    new.unlink()
    old.unlink()
    device.updater().install_from_usb("/dev/sdz1")
    assert device.status()["state"] == "nothing"
    assert "no *.raucb at the top of the stick" in device.status()["message"]
