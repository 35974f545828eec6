"""Finding headsets as a Pi's sysfs lists them, the udev check, and what ``firmware-app doctor`` says."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from softphone_usb_headset import udev
from softphone_usb_headset.devices import SysfsHidraw
from tests.peers.support import free_port
from tests.phone_process import FIRMWARE_APP
from tests.usb_headset import descriptors as d
from tests.usb_headset.sim import PLUGIN, UsbHeadsetSim

JABRA_UEVENT = "DRIVER=hid-generic\nHID_ID=0003:00000B0E:0000245E\nHID_NAME=GN Netcom A/S Jabra Link 380\n"
POLY_UEVENT = "DRIVER=hid-generic\nHID_ID=0003:0000047F:0000C03B\nHID_NAME=Plantronics Savi 7xx\n"


def fake_sysfs(root: Path) -> Path:
    """/sys/class/hidraw as a Pi with a Jabra dongle (hidraw2) and an old Poly (hidraw0) shows it."""
    sysfs = root / "sys"
    for name, descriptor, uevent in (("hidraw2", d.JABRA_LIKE, JABRA_UEVENT), ("hidraw0", d.POLY_VENDOR, POLY_UEVENT)):
        device = sysfs / name / "device"
        device.mkdir(parents=True)
        (device / "report_descriptor").write_bytes(descriptor)
        (device / "uevent").write_text(uevent)
    return sysfs


def test_sysfs_lists_every_node_with_its_identity(tmp_path):
    nodes = SysfsHidraw(str(fake_sysfs(tmp_path)), "/dev").scan()
    assert [(n.path, n.name, n.usb_id, n.telephony()) for n in nodes] == [
        ("/dev/hidraw0", "Plantronics Savi 7xx", "047f:c03b", False),
        ("/dev/hidraw2", "GN Netcom A/S Jabra Link 380", "0b0e:245e", True),
    ]
    jabra = nodes[1]
    assert jabra.matches("") and jabra.matches("0b0e:245e") and jabra.matches("0B0E") and jabra.matches("jabra")
    assert not jabra.matches("046d:0a29") and not jabra.matches("Poly")


def test_a_missing_sysfs_is_no_nodes():
    assert SysfsHidraw("/nonexistent/hidraw").scan() == []


def test_the_udev_check_says_yes_to_telephony_interfaces_only(tmp_path):
    sysfs = str(fake_sysfs(tmp_path))
    assert udev.is_telephony("hidraw2", sysfs) is True
    assert udev.is_telephony("hidraw0", sysfs) is False  # vendor page only
    assert udev.is_telephony("hidraw9", sysfs) is False  # gone
    rule = (Path(__file__).resolve().parents[2] / "systemd/udev/60-firmware-app-hid-telephony.rules").read_text()
    assert 'SUBSYSTEM=="hidraw"' in rule and "-m softphone_usb_headset.udev %k" in rule and 'GROUP="firmware-app"' in rule


def test_doctor_lists_the_headset_and_its_controls(tmp_path):
    sim = UsbHeadsetSim(tmp_path / "hidraw", d.JABRA_LIKE, "GN Netcom A/S Jabra Link 380").plug()
    config = tmp_path / "config.toml"
    config.write_text(f'[account]\nregistrar = "127.0.0.1:{free_port()}"\nuser = "1000"\n\n{PLUGIN}\n[usb_headset]\n')
    result = subprocess.run(
        [*FIRMWARE_APP, "-c", str(config), "doctor", "--json"], env={**os.environ, **sim.env},
        capture_output=True, text=True, timeout=30,
    )
    report = json.loads(result.stdout)
    section = report["plugins"]["usb_headset"]
    assert section["data"]["nodes"][0]["telephony"] is True
    assert "Telephony Headset: inputs hook_switch (absolute)" in section["lines"][0]
    assert section["lines"][-1].startswith("the phone uses ")
    assert not [p for p in report["problems"] if p.startswith("usb_headset")]
    text = subprocess.run(
        [*FIRMWARE_APP, "-c", str(config), "doctor"], env={**os.environ, **sim.env}, capture_output=True, text=True, timeout=30
    ).stdout
    assert "usb_headset " in text and "off_hook, ring, mute, hold" in text
    sim.unplug()


def test_doctor_says_when_no_headset_is_there(tmp_path):
    sim = UsbHeadsetSim(tmp_path / "hidraw", d.JABRA_LIKE)  # never plugged in
    config = tmp_path / "config.toml"
    config.write_text(f'[account]\nregistrar = "127.0.0.1:{free_port()}"\nuser = "1000"\n\n{PLUGIN}\n[usb_headset]\nmatch = "jabra"\n')
    result = subprocess.run(
        [*FIRMWARE_APP, "-c", str(config), "doctor", "--json"], env={**os.environ, **sim.env},
        capture_output=True, text=True, timeout=30,
    )
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert "usb_headset: no USB headset with a telephony interface matching 'jabra'" in report["problems"]
