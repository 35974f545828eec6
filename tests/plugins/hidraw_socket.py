"""Test plugin: the phone's USB headset behind a Unix socket instead of a hidraw node.

Load it with ``[plugins] modules = ["tests.plugins.hidraw_socket"]`` and point ``FIRMWARE_APP_TEST_HIDRAW``
at a folder holding ``descriptor`` (the report descriptor's bytes), ``uevent`` (``HID_ID=...``,
``HID_NAME=...``, as sysfs has it) and ``hidraw0``, a listening SOCK_SEQPACKET socket the test serves:
one message per report both ways, as a hidraw node reads and writes. While ``hidraw0`` is not there, no
headset is plugged in. The plugin ``softphone_usb_headset`` then runs unchanged on the other side of
:class:`softphone_usb_headset.devices.HidrawDevices`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import softphone_usb_headset
from softphone_usb_headset.devices import HidrawNode, node_from_uevent


class SocketHidraw:
    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def scan(self) -> list[HidrawNode]:
        node = self.folder / "hidraw0"
        try:
            if not node.is_socket():
                return []
            descriptor = (self.folder / "descriptor").read_bytes()
            uevent = (self.folder / "uevent").read_text()
        except OSError:
            return []
        return [node_from_uevent(str(node), uevent, descriptor)]

    def open(self, node: HidrawNode) -> int:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(node.path)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock.detach()


softphone_usb_headset.default_devices = lambda: SocketHidraw(os.environ["FIRMWARE_APP_TEST_HIDRAW"])
