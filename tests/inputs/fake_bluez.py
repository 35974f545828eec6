"""A fake Bluetooth world: BlueZoo (PyPI ``bluezoo``) emulating BlueZ on a private D-Bus system bus, with two
virtual adapters: hci0 is the phone's, hci1 is a BLE button's. The button is a real GATT application and
LE advertisement registered with hci1 over D-Bus, as a peripheral on BlueZ would register them, so bleak
discovers, connects and subscribes through the same D-Bus calls as on a Pi.
"""

# No "from __future__ import annotations" here: dbus-fast reads D-Bus signatures from the annotations.
import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dbus_fast import BusType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, method

CENTRAL = "00:00:00:01:00:00"  # hci0, the phone
BUTTON = "00:00:00:02:00:00"  # hci1, the button
SERVICE_UUID = "0000ff00-0000-1000-8000-00805f9b34fb"
CHAR_UUID = "0000ff01-0000-1000-8000-00805f9b34fb"
TICK_UUID = "0000ff7f-0000-1000-8000-00805f9b34fb"  # service data that changes at each advertising event

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""


_REPO = Path(__file__).resolve().parents[2]


def run_bluezoo() -> None:
    """BlueZoo's main, with one fix: a disconnect drops the GATT objects it exported at connection time.

    BlueZ does that for a device that is not bonded; BlueZoo 1.0.2 keeps them, so the next connection
    fails to export them again (EEXIST) and no device could ever reconnect.
    """
    from bluezoo import bluezoo
    from bluezoo.device import Device

    disconnect = Device.disconnect

    async def disconnect_and_drop_services(self: Device, uuid: Any = None) -> None:
        await disconnect(self, uuid)
        for link in self.services.values():
            self.peer_adapter.mock.remove_object(link)
        self.services.clear()
        if self.services_resolved:
            await self.ServicesResolved.set_async(False)

    Device.disconnect = disconnect_and_drop_services
    bluezoo.main()


class FakeBluez:
    """dbus-daemon on a private socket, and BlueZoo owning org.bluez on it (both owned, both stopped)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "system_bus.sock"
        self.address = f"unix:path={self.socket}"
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    def start(self) -> "FakeBluez":
        try:
            return self._start()
        except BaseException:
            self.stop()  # never leave a bus or a BlueZoo behind
            raise

    def _start(self) -> "FakeBluez":
        daemon = shutil.which("dbus-daemon") or "/usr/bin/dbus-daemon"
        if not os.access(daemon, os.X_OK):
            raise RuntimeError("dbus-daemon is not installed: run tests/setup.sh (Debian package dbus-daemon)")
        conf = self.workdir / "bus.conf"
        conf.write_text(BUS_CONFIG.format(socket=self.socket))
        log = (self.workdir / "dbus.log").open("wb")
        self._logs.append(log)
        self._procs.append(subprocess.Popen([daemon, f"--config-file={conf}", "--nofork"], stdout=log, stderr=log))
        self._wait(lambda: self.socket.exists(), "the private D-Bus socket")
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}
        bluezoo = [sys.executable, "-c", "from tests.inputs.fake_bluez import run_bluezoo; run_bluezoo()"]
        bluezoo += ["-v", "--auto-enable", "--scan-interval", "1"]
        log = (self.workdir / "bluezoo.log").open("wb")
        self._logs.append(log)
        self._procs.append(subprocess.Popen(bluezoo, stdout=log, stderr=log, env=env, cwd=_REPO))
        # it owns org.bluez before it says "Initializing" (at -v)
        self._wait(lambda: b"Initializing" in (self.workdir / "bluezoo.log").read_bytes(), "BlueZoo")
        if self._exited():
            raise RuntimeError(f"BlueZoo did not start:\n{self.log()}")
        return self

    def log(self) -> str:
        return (self.workdir / "bluezoo.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def _exited(self) -> bool:
        return any(p.poll() is not None for p in self._procs)

    def _wait(self, probe: Any, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            if time.monotonic() > deadline or self._exited():
                raise RuntimeError(f"{what} did not come up")
            time.sleep(0.02)


# --- the button: a GATT application and an advertisement, exported from the test process -----------------


class _Service(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.bluez.GattService1")

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":  # noqa: F821
        return SERVICE_UUID

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> "b":  # noqa: F821
        return True


class _Characteristic(ServiceInterface):
    def __init__(self, service_path: str) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self.service_path = service_path
        self.value = b""
        self.notifying = False

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":  # noqa: F821
        return CHAR_UUID

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> "o":  # noqa: F821
        return self.service_path

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> "as":  # noqa: F821
        return ["read", "notify"]

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> "ay":  # noqa: F821
        return self.value

    @dbus_property(access=PropertyAccess.READ)
    def Notifying(self) -> "b":  # noqa: F821
        return self.notifying

    @method()
    def ReadValue(self, options: "a{sv}") -> "ay":  # noqa: F821
        return self.value

    @method()
    def StartNotify(self):
        self.notifying = True

    @method()
    def StopNotify(self):
        self.notifying = False

    @method()
    def Confirm(self):
        pass

    def notify(self, data: bytes) -> None:
        self.value = data
        self.emit_properties_changed({"Value": data})


class _Advertisement(ServiceInterface):
    def __init__(self, local_name: str, service_uuids: list[str], service_data: dict[str, bytes]) -> None:
        super().__init__("org.bluez.LEAdvertisement1")
        self.local_name = local_name
        self.service_uuids = service_uuids
        self.service_data = service_data
        self.tick = 0

    def advertise_again(self) -> None:
        """A real advertiser is heard over and over (BlueZ updates its RSSI each time); BlueZoo reports a
        device again only when its data changed (and cannot carry manufacturer data): so change a byte of
        service data under a UUID of its own."""
        self.tick = (self.tick + 1) % 256
        self.emit_properties_changed({"ServiceData": self._service_data()})

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> "s":  # noqa: F821
        return "peripheral"

    @dbus_property(access=PropertyAccess.READ)
    def LocalName(self) -> "s":  # noqa: F821
        return self.local_name

    @dbus_property(access=PropertyAccess.READ)
    def ServiceUUIDs(self) -> "as":  # noqa: F821
        return self.service_uuids

    @dbus_property(access=PropertyAccess.READ)
    def ServiceData(self) -> "a{sv}":  # noqa: F821
        return self._service_data()

    def _service_data(self) -> dict[str, Variant]:
        data = {k: Variant("ay", v) for k, v in self.service_data.items()}
        data[TICK_UUID] = Variant("ay", bytes([self.tick]))
        return data

    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> "b":  # noqa: F821
        return True

    @method()
    def Release(self):
        pass

    def set_service_data(self, uuid: str, data: bytes) -> None:
        self.service_data = {uuid: data}
        self.emit_properties_changed({"ServiceData": self._service_data()})


class FakeButton:
    """The world around the phone: adapters, and a BLE button that advertises, serves and notifies."""

    def __init__(self, bus_address: str, name: str = "Shutter") -> None:
        self.bus_address, self.name = bus_address, name
        self.bus: MessageBus | None = None
        self.char = _Characteristic("/button/service0")
        self.adv: _Advertisement | None = None
        self._advertising: asyncio.Future[None] | None = None

    async def start(self) -> "FakeButton":
        self.bus = await MessageBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM).connect()
        manager = await self._iface("/org/bluezoo", "org.bluezoo.Manager1")
        for index, address in ((0, CENTRAL), (1, BUTTON)):
            await manager.call_add_adapter(index, address)
        self.bus.export("/button/service0", _Service())
        self.bus.export("/button/service0/char0", self.char)
        return self

    async def close(self) -> None:
        self._stop_ticking()
        if self.bus is not None:
            manager = await self._iface("/org/bluezoo", "org.bluezoo.Manager1")
            for index in (0, 1):
                try:
                    await manager.call_remove_adapter(index)
                except Exception:
                    pass
            self.bus.disconnect()
            try:
                await asyncio.wait_for(self.bus.wait_for_disconnect(), 5)
            except Exception:
                pass  # it reports how the connection ended: closing it is all that matters here
            self.bus = None

    async def serve(self) -> None:
        """Register the GATT application (the button is awake)."""
        gatt = await self._iface("/org/bluez/hci1", "org.bluez.GattManager1")
        await gatt.call_register_application("/button", {})

    async def unserve(self) -> None:
        gatt = await self._iface("/org/bluez/hci1", "org.bluez.GattManager1")
        await gatt.call_unregister_application("/button")

    async def advertise(self, service_data: dict[str, bytes] | None = None, uuids: list[str] | None = None) -> None:
        assert self.bus is not None
        self.adv = _Advertisement(self.name, [SERVICE_UUID] if uuids is None else uuids, service_data or {})
        self.bus.export("/button/adv0", self.adv)
        manager = await self._iface("/org/bluez/hci1", "org.bluez.LEAdvertisingManager1")
        await manager.call_register_advertisement("/button/adv0", {})
        self._advertising = asyncio.ensure_future(self._keep_advertising(self.adv))

    async def _keep_advertising(self, adv: _Advertisement) -> None:
        while True:
            await asyncio.sleep(0.3)
            adv.advertise_again()

    async def stop_advertising(self) -> None:
        assert self.bus is not None
        self._stop_ticking()
        manager = await self._iface("/org/bluez/hci1", "org.bluez.LEAdvertisingManager1")
        await manager.call_unregister_advertisement("/button/adv0")
        self.bus.unexport("/button/adv0")

    def _stop_ticking(self) -> None:
        if self._advertising is not None:
            self._advertising.cancel()
            self._advertising = None

    def notify(self, data: bytes) -> None:
        self.char.notify(data)

    async def drop_link(self) -> None:
        """The radio link is lost (out of range, asleep): the phone's side sees Connected go false."""
        device = await self._iface(f"/org/bluez/hci0/dev_{BUTTON.replace(':', '_')}", "org.bluez.Device1")
        await device.call_disconnect()

    async def forget(self) -> None:
        """BlueZ drops the device from its cache, as it does for one not seen for a while."""
        adapter = await self._iface("/org/bluez/hci0", "org.bluez.Adapter1")
        await adapter.call_remove_device(f"/org/bluez/hci0/dev_{BUTTON.replace(':', '_')}")

    async def connected(self) -> bool:
        props = await self._iface(f"/org/bluez/hci0/dev_{BUTTON.replace(':', '_')}", "org.freedesktop.DBus.Properties")
        try:
            return bool((await props.call_get("org.bluez.Device1", "Connected")).value)
        except Exception:
            return False

    async def _iface(self, path: str, interface: str) -> Any:
        assert self.bus is not None
        introspection = await self.bus.introspect("org.bluez", path)
        return self.bus.get_proxy_object("org.bluez", path, introspection).get_interface(interface)
