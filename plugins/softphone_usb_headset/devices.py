"""Where USB headsets' telephony interfaces are: the hidraw nodes, as Linux lists them in sysfs.

Each hidraw node is one HID interface of one device. ``/sys/class/hidraw/hidrawN/device/`` has its report
descriptor (``report_descriptor``) and its identity (``uevent``: ``HID_ID=0003:00000B0E:0000245E``,
``HID_NAME=GN Netcom A/S Jabra EVOLVE 20 MS``); the node itself is ``/dev/hidrawN``, where one ``read()``
is one input report and one ``write()`` one output report (led by the report ID, 0 when the device does
not number its reports). A headset has a node per interface: the telephony one is the node whose
descriptor has a top-level Telephony collection (:mod:`softphone_usb_headset.hid`).

The phone reaches nodes through :class:`HidrawDevices`, so tests stand a socketpair in for the node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .hid import DescriptorError, NotTelephonyError, TelephonyHeadset

SYSFS = "/sys/class/hidraw"
DEV = "/dev"


@dataclass(frozen=True)
class HidrawNode:
    """One hidraw node and the device behind it."""

    path: str  # /dev/hidraw3
    name: str  # the device's name (HID_NAME)
    vendor: int  # USB vendor and product IDs (HID_ID)
    product: int
    descriptor: bytes = field(repr=False)

    @property
    def usb_id(self) -> str:
        """``0b0e:245e``, as lsusb prints it."""
        return f"{self.vendor:04x}:{self.product:04x}"

    def matches(self, wanted: str) -> bool:
        """Whether ``wanted`` (the configuration's ``match``) names this node: its USB ID (``0b0e:245e``,
        or just the vendor ``0b0e``), its path, or a part of its name (case does not matter); "" names any."""
        wanted = wanted.strip()
        if not wanted:
            return True
        if wanted.startswith("/"):
            return os.path.realpath(wanted) == os.path.realpath(self.path)
        lowered = wanted.lower()
        return lowered in (self.usb_id, f"{self.vendor:04x}") or lowered in self.name.lower()

    def headset(self) -> TelephonyHeadset:
        """The telephony side of its descriptor (:class:`DescriptorError`, :class:`NotTelephonyError`)."""
        return TelephonyHeadset.from_descriptor(self.descriptor)

    def telephony(self) -> bool:
        try:
            self.headset()
        except (DescriptorError, NotTelephonyError):
            return False
        return True


class HidrawDevices(Protocol):
    """The hidraw nodes of this machine, and opening one (the phone's file boundary)."""

    def scan(self) -> list[HidrawNode]:
        """Every hidraw node now, telephony or not, in a stable order."""

    def open(self, node: HidrawNode) -> int:
        """A non-blocking read/write file descriptor on the node (OSError when it cannot be opened)."""


class SysfsHidraw:
    """The machine's own hidraw nodes."""

    def __init__(self, sysfs: str = SYSFS, dev: str = DEV) -> None:
        self.sysfs, self.dev = Path(sysfs), Path(dev)

    def scan(self) -> list[HidrawNode]:
        try:
            names = sorted(os.listdir(self.sysfs), key=_node_number)
        except OSError:
            return []  # no HID support in the kernel, or no device ever plugged in
        nodes = []
        for name in names:
            device = self.sysfs / name / "device"
            try:
                descriptor = (device / "report_descriptor").read_bytes()
                uevent = (device / "uevent").read_text(errors="replace")
            except OSError:
                continue  # unplugged between the listing and the read
            nodes.append(node_from_uevent(str(self.dev / name), uevent, descriptor))
        return nodes

    def open(self, node: HidrawNode) -> int:
        return os.open(node.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)


def node_from_uevent(path: str, uevent: str, descriptor: bytes) -> HidrawNode:
    """A node from the HID device's ``uevent`` text (``HID_ID=0003:00000B0E:0000245E``, ``HID_NAME=...``)."""
    values = dict(line.partition("=")[::2] for line in uevent.splitlines() if "=" in line)
    vendor = product = 0
    parts = values.get("HID_ID", "").split(":")
    if len(parts) == 3:
        try:
            vendor, product = int(parts[1], 16) & 0xFFFF, int(parts[2], 16) & 0xFFFF
        except ValueError:
            pass
    return HidrawNode(path, values.get("HID_NAME", "").strip(), vendor, product, descriptor)


def telephony_nodes(devices: HidrawDevices) -> list[HidrawNode]:
    return [n for n in devices.scan() if n.telephony()]


def _node_number(name: str) -> tuple[int, str]:
    digits = name.removeprefix("hidraw")
    return (int(digits), name) if digits.isdigit() else (1 << 30, name)
