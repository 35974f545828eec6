"""A USB headset for a phone run as a process: its hidraw node is a Unix socket this test serves.

The phone loads tests/plugins/hidraw_socket.py, which opens ``hidraw0`` in the folder instead of a
``/dev/hidrawN``; what goes over it are the real report bytes a headset and a phone exchange.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

PLUGIN = '[plugins]\nmodules = ["tests.plugins.hidraw_socket"]\n'


class UsbHeadsetSim:
    def __init__(self, folder: Path, descriptor: bytes, name: str = "GN Netcom Jabra Link 380",
                 usb_id: str = "0b0e:245e", echo: Callable[[bytes], bytes | None] | None = None) -> None:
        """``echo(output_report)``: the input report a headset sends back when the phone changes its hook
        state (a latching headset follows the host's Off-Hook), or None."""
        self.folder = folder
        self.echo = echo
        self._last_echo: bytes | None = None
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "descriptor").write_bytes(descriptor)
        vendor, product = usb_id.split(":")
        (folder / "uevent").write_text(f"HID_ID=0003:0000{vendor.upper()}:0000{product.upper()}\nHID_NAME={name}\n")
        self.env = {"FIRMWARE_APP_TEST_HIDRAW": str(folder)}
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._reports: list[bytes] = []
        self._lock = threading.Condition()

    def plug(self) -> UsbHeadsetSim:
        """The headset is plugged in: the node appears; the phone's next scan opens it."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(str(self.folder / "hidraw0"))
        listener.listen(1)
        self._listener = listener
        self._last_echo = None  # a headset plugged in again reports its hook afresh
        threading.Thread(target=self._serve, args=(listener,), daemon=True).start()
        return self

    def unplug(self) -> None:
        """The headset is pulled out: the node goes, and the phone's next read ends."""
        (self.folder / "hidraw0").unlink(missing_ok=True)
        for sock in (self._listener, self._conn):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        self._listener = self._conn = None

    def send(self, report: bytes) -> None:
        """An input report, as the headset sends it."""
        self.wait_open()
        assert self._conn is not None
        self._conn.send(report)

    def wait_open(self, timeout: float = 10.0) -> None:
        with self._lock:
            if not self._lock.wait_for(lambda: self._conn is not None, timeout):
                raise AssertionError("the phone never opened the headset's node")

    def wait_report(self, report: bytes, timeout: float = 5.0) -> list[bytes]:
        """Wait until the phone has written ``report`` (the output reports since the last call)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while report not in self._reports:
                left = deadline - time.monotonic()
                if left <= 0 or not self._lock.wait(left):
                    raise AssertionError(f"the phone did not write {report.hex()}; it wrote {[r.hex() for r in self._reports]}")
            seen, self._reports = self._reports, []
            return seen

    def _serve(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with self._lock:
            self._conn = conn
            self._lock.notify_all()
        while True:
            try:
                report = conn.recv(64)
            except OSError:
                return
            if not report:
                return
            reply = self.echo(report) if self.echo is not None else None
            if reply is not None and reply != self._last_echo:  # before the test hears of the report
                self._last_echo = reply
                conn.send(reply)
            with self._lock:
                self._reports.append(report)
                self._lock.notify_all()
