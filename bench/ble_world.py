"""A BLE button for the phone to connect to: the tests' fake BlueZ (BlueZoo on a private D-Bus system bus)
and its GATT button, run on an asyncio loop in a thread of the bench."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from tests.inputs.fake_bluez import BUTTON, FakeBluez, FakeButton

__all__ = ["BUTTON", "BleWorld"]


class BleWorld:
    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.bluez = FakeBluez(workdir)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ble-world", daemon=True)
        self.button: FakeButton | None = None

    @property
    def bus_address(self) -> str:
        return self.bluez.address

    def start(self) -> BleWorld:
        self.bluez.start()
        self.thread.start()
        self.button = self._run(FakeButton(self.bluez.address).start())
        self._run(self.button.serve())
        self._run(self.button.advertise())
        return self

    def stop(self) -> None:
        if self.button is not None:
            try:
                self._run(self.button.close(), timeout=5)
            except Exception:
                pass
            self.button = None
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        self.bluez.stop()

    def _run(self, coro, timeout: float = 10.0):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)
