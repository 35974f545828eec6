"""The SD image, built and booted for real (slow, opt-in):

    sudo .venv/bin/python -m pytest -m slow tests/device/test_image_boot.py

builds image/out/firmware-app-arm64.img with image/build-image.sh (or boots FIRMWARE_APP_IMAGE=PATH as it
is), puts a settings file and a secrets file on a copy's boot partition with mtools, and boots the copy under
qemu-system-aarch64 -M virt through U-Boot (Debian's u-boot-qemu), which runs the image's boot.scr: RAUC's
boot counting picks slot A. The phone reaches a Kamailio on this machine through QEMU's user-mode network:
the guest is isolated (restrict=on) but for one forwarded TCP address, so nothing but the phone's SIP
traffic leaves it. Asserts: slot A booted by the boot script, the data partition seeded and grown,
provisioning installed the settings (onto the data partition) and removed the secret from the card, machine
id and SSH host keys were made on this boot, the phone's unit reported READY=1 (systemd prints "Started" for
a Type=notify unit only then), the phone registered, the health check passed and RAUC marked slot A good
(its counter back at 3 in firmware-boot.env), and on power-off the phone un-REGISTERed and stopped cleanly.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.kamailio import Kamailio

from .image_guest import (
    PASSWORD,
    USER,
    Guest,
    GuestKamailio,
    boot_counters,
    built_image,
    failed_units,
    fat_files,
    make_card,
    partitions,
    require,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image() -> Path:
    return built_image()


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[Kamailio]:
    require("kamailio", "kamcmd")
    with GuestKamailio(tmp_path / "kamailio", {USER: PASSWORD}) as proxy:
        yield proxy


def test_the_image_boots_slot_a_provisions_itself_registers_and_is_marked_good(
        image: Path, kamailio: Kamailio, tmp_path: Path) -> None:
    require("qemu-system-aarch64", "mcopy", "mdir", "sfdisk", "fw_printenv")
    disk = make_card(image, tmp_path, kamailio)
    data_before = partitions(disk)[3]["size"]
    assert boot_counters(disk, tmp_path) == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}

    guest = Guest(disk, tmp_path, kamailio)
    try:
        guest.wait_for(r"firmware-boot: slot A \(order A B, tries left A 2 B 3\)", "the boot script's choice")
        guest.wait_for(r"Kernel command line: .*root=PARTUUID=5e1f0001-02 .*rauc\.slot=A", "slot A's kernel")
        guest.wait_for(r"firmware-data: seeded /data/etc/firmware-app", "the data partition's seeding")
        guest.wait_for(r"firmware-provision: applied: installed /etc/firmware-app/config.toml", "provisioning")
        t_provisioned = guest.elapsed()
        guest.wait_for(r"Started .*firmware-app\.service", "READY=1 from the phone")
        t_ready = guest.elapsed()
        contacts = guest.wait_registered(kamailio, "slot A")
        t_registered = guest.elapsed()
        assert any("transport=tcp" in c.lower() for c in contacts)
        guest.wait_for(r"firmware-slot: marked good: A ", "slot A marked good")
        t_good = guest.elapsed()
        print(f"slot A: provisioned after {t_provisioned:.0f} s, READY after {t_ready:.0f} s, "
              f"registered after {t_registered:.0f} s, marked good after {t_good:.0f} s: {contacts}")
        text = guest.text()
        assert re.search(r"Finished .*firmware-app-health\.service", text)
        assert re.search(r"Finished .*rauc-mark-good\.service", text)
        guest.wait_for(r"growroot: /dev/vda4 now fills /dev/vda", "the data partition's growth")
        # Per-device identity made on this first boot, none carried by the image.
        assert "Initializing machine ID from random generator" in text
        assert re.search(r"Finished .*firmware-ssh-hostkeys\.service", text)
        assert re.search(r"Using hardware watchdog", text), "systemd does not use the watchdog (i6300esb)"
        # The headset plugins run on a device with neither a Bluetooth adapter nor a USB headset: said once.
        guest.wait_for(r"hfp: bluealsa is not running", "the Bluetooth headset plugin's start")
        guest.wait_for(r"usb_headset headset: missing", "the USB headset plugin's start")
        assert "firmware" not in failed_units(guest.text()), failed_units(guest.text())
        assert "rauc" not in failed_units(guest.text()), failed_units(guest.text())
        assert "ordering cycle" not in guest.text()
    finally:
        guest.power_off()

    # A clean shutdown: systemd stopped the phone (SIGTERM), which un-REGISTERed and exited 0.
    assert re.search(r"Stopped .*firmware-app\.service", guest.text()), guest.text()[-3000:]
    assert not re.search(r"firmware-app\.service: (Main process exited|Failed)", guest.text())
    assert kamailio.contacts(USER) == [], "the phone did not un-REGISTER when the device shut down"
    # RAUC marked A good: its counter is full again; the data partition filled the larger card.
    assert boot_counters(disk, tmp_path) == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}
    assert partitions(disk)[3]["size"] > data_before + (400 << 11)
    # The secret is gone from the card, the settings are still there.
    files = fat_files(disk)
    assert "firmware-app-secrets.toml" not in files
    assert "firmware-app.toml" in files
