"""``python -m softphone_usb_headset.udev hidrawN``: exit 0 when the node is a headset's telephony interface.

The udev rule (systemd/udev/60-firmware-app-hid-telephony.rules) runs it for each hidraw node that appears
and gives the phone's service group only the nodes it says yes to: a keyboard's or a security key's hidraw
node stays root's. It reads the report descriptor from sysfs and never opens the node.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .devices import SYSFS
from .hid import DescriptorError, NotTelephonyError, TelephonyHeadset


def is_telephony(node: str, sysfs: str = SYSFS) -> bool:
    try:
        descriptor = (Path(sysfs) / node / "device" / "report_descriptor").read_bytes()
        TelephonyHeadset.from_descriptor(descriptor)
    except (OSError, DescriptorError, NotTelephonyError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m softphone_usb_headset.udev hidrawN", file=sys.stderr)
        return 2
    return 0 if is_telephony(Path(args[0]).name) else 1


if __name__ == "__main__":
    sys.exit(main())
