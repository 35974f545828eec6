"""Plugin: Bluetooth LE buttons and remotes through bleak (see README.md here).

Two kinds of device:

* **GATT devices** (``[ble.devices.NAME]``): connected to, found by address or name; one characteristic's
  notifications are matched against byte patterns that mean pressed / released (the phone then recognises
  single, double and long presses) or a gesture the device recognised itself. A device that sleeps or walks
  away is searched for again with a backoff; each change is logged once.
* **Connectionless buttons** (``[ble.beacons.NAME]``): buttons that report presses in their advertisements,
  in the BTHome v2 format (Shelly BLU Button and the like); nothing to connect to.

Pairing and trust are a provisioning step (``bluetoothctl``), not the phone's.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta

from firmware_app import Phone, hookimpl
from firmware_app.config import Config
from firmware_app.errors import ConfigError
from firmware_app.extras import import_extra
from firmware_app.gestures import ControlKind, TimingConfig
from firmware_app.inputs import Backoff, DeviceStatus, InputControl
from firmware_app.model import Gesture

if TYPE_CHECKING:
    from bleak import BleakClient
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData


log = logging.getLogger("firmware_app.ble")

SOURCE = "ble"
BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
_ADDRESS = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_UUID16 = re.compile(r"^(0x)?[0-9A-Fa-f]{4}$")
_UUID128 = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")

# --- configuration ---------------------------------------------------------------------------------------

DeviceGesture = Literal["single", "double", "long"]


class BleButtonConfig(TimingConfig, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One control fed by a device's notifications. Payloads are hex bytes; ``??`` matches any byte."""

    press: list[str] = []  # payloads meaning "pressed" ...
    release: list[str] = []  # ... and "released": the phone tells single, double and long apart
    gestures: dict[str, DeviceGesture] = {}  # payloads meaning a gesture the device recognised itself


class GattDeviceConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    address: str = ""  # "AA:BB:CC:DD:EE:FF"
    name: str = ""  # or the name it advertises
    characteristic: str  # the GATT characteristic that notifies: "ff01" or a full 128-bit UUID
    buttons: dict[str, BleButtonConfig]


class BeaconConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    address: str = ""
    name: str = ""
    format: Literal["bthome"] = "bthome"
    buttons: Annotated[list[str], Meta(min_length=1)]  # control names, in the order of the device's buttons


class BleConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    adapter: str = ""  # "hci1"; empty: BlueZ's default adapter
    devices: dict[str, GattDeviceConfig] = {}
    beacons: dict[str, BeaconConfig] = {}
    scan_timeout_s: Annotated[float, Meta(ge=0.5, le=120)] = 10.0  # one search for an absent device
    retry_first_s: Annotated[float, Meta(ge=0.05, le=600)] = 2.0
    retry_max_s: Annotated[float, Meta(ge=0.05, le=3600)] = 60.0


Pattern = tuple[int | None, ...]


def parse_pattern(text: str) -> Pattern:
    """``"01 ?? ff"`` -> (1, None, 255). Raises ValueError."""
    compact = re.sub(r"[\s:]", "", text)
    if not compact or len(compact) % 2:
        raise ValueError("expected whole bytes in hex, like \"01\" or \"a0 ?? 01\"")
    out: list[int | None] = []
    for i in range(0, len(compact), 2):
        pair = compact[i : i + 2]
        out.append(None if pair == "??" else int(pair, 16))
    return tuple(out)


def matches(pattern: Pattern, data: bytes) -> bool:
    return len(pattern) == len(data) and all(p is None or p == b for p, b in zip(pattern, data, strict=True))


def full_uuid(text: str) -> str:
    if _UUID16.match(text):
        return f"0000{text[-4:].lower()}-0000-1000-8000-00805f9b34fb"
    return text.lower()


# --- BTHome v2 -------------------------------------------------------------------------------------------

#: Object id -> data length, from the BTHome v2 format (bthome.io/format); parsing stops at an unknown id.
_BTHOME_SIZES = {
    **dict.fromkeys([0x00, 0x01, 0x09, 0x2E, 0x2F, 0x3A, 0x46, *range(0x0F, 0x12), *range(0x15, 0x2E)], 1),
    **dict.fromkeys([0x02, 0x03, 0x06, 0x07, 0x08, 0x0C, 0x0D, 0x0E, 0x12, 0x13, 0x14, 0x3C, 0x3D, 0x3F], 2),
    **dict.fromkeys([0x40, 0x41, 0x43, 0x44, 0x45, 0x47, 0x48, 0x49, 0x4A, 0x51, 0x52, 0xF0], 2),
    **dict.fromkeys([0x04, 0x05, 0x0A, 0x0B, 0x42, 0x4B, 0xF2], 3),
    **dict.fromkeys([0x3E, 0x4C, 0x4D, 0x4E, 0x4F, 0x50, 0xF1], 4),
}
_BTHOME_BUTTON = 0x3A
#: BTHome button event -> gesture (triple presses have no meaning on a phone and are left out).
BTHOME_GESTURES = {0x01: Gesture.SINGLE, 0x02: Gesture.DOUBLE, 0x04: Gesture.LONG, 0x80: Gesture.LONG}


@dataclass(frozen=True)
class BTHomeReport:
    packet_id: int | None
    buttons: tuple[int, ...]  # the event of each button object, in order (0 = nothing happened)
    encrypted: bool = False


def decode_bthome(data: bytes) -> BTHomeReport | None:
    """The packet id and button events of a BTHome v2 service-data payload; None if it is not one."""
    if not data or (data[0] >> 5) != 2:
        return None
    if data[0] & 0x01:
        return BTHomeReport(None, (), encrypted=True)
    packet_id, buttons, i = None, [], 1
    while i < len(data):
        object_id = data[i]
        size = _BTHOME_SIZES.get(object_id)
        if size is None or i + 1 + size > len(data):
            break
        value = data[i + 1]
        if object_id == 0x00:
            packet_id = value
        elif object_id == _BTHOME_BUTTON:
            buttons.append(value)
        i += 1 + size
    return BTHomeReport(packet_id, tuple(buttons))


# --- the plugin ------------------------------------------------------------------------------------------


@dataclass
class _Button:
    control: str
    press: list[Pattern]
    release: list[Pattern]
    gestures: list[tuple[Pattern, Gesture]]


@dataclass
class _Device:
    name: str
    config: GattDeviceConfig
    buttons: list[_Button]
    status: DeviceStatus
    task: asyncio.Task[None] | None = None
    client: BleakClient | None = None


@dataclass
class _Beacon:
    name: str
    config: BeaconConfig
    last: bytes | None = None  # the last payload acted on (advertisements repeat)
    warned: set[str] = field(default_factory=set)


def _wanted(config: GattDeviceConfig | BeaconConfig, device: BLEDevice, adv: AdvertisementData) -> bool:
    if config.address:
        return device.address.upper() == config.address.upper()
    return config.name in (device.name, adv.local_name)


class BlePlugin:
    def __init__(self) -> None:
        self.config = BleConfig()
        self.phone: Phone | None = None
        self.devices: dict[str, _Device] = {}
        self.beacons: dict[str, _Beacon] = {}
        self.controls: dict[str, InputControl] = {}
        self.timings: dict[str, Any] = {}
        self.enabled = False  # something is configured and bleak is installed
        self._scanner_task: asyncio.Task[None] | None = None

    # --- configuration ----------------------------------------------------------------------------------

    @hookimpl
    def softphone_configure(self, config: Config) -> None:
        file = str(config.path)
        self.config = config.convert(config.section("ble"), BleConfig, "ble")
        for group, table in (("devices", self.config.devices), ("beacons", self.config.beacons)):
            for name, item in table.items():
                key = f"ble.{group}.{name}"
                if bool(item.address) == bool(item.name):
                    raise ConfigError(file, key, "give the device's address or its name (one of them)")
                if item.address and not _ADDRESS.match(item.address):
                    raise ConfigError(file, f"{key}.address", f"expected AA:BB:CC:DD:EE:FF, got {item.address!r}")
        for name, device in self.config.devices.items():
            key = f"ble.devices.{name}"
            if not (_UUID16.match(device.characteristic) or _UUID128.match(device.characteristic)):
                raise ConfigError(file, f"{key}.characteristic", "expected a 16-bit (\"ff01\") or 128-bit UUID")
            if not device.buttons:
                raise ConfigError(file, f"{key}.buttons", "expected at least one button")
            for button_name, button in device.buttons.items():
                bkey = f"{key}.buttons.{button_name}"
                if bool(button.press) != bool(button.release):
                    raise ConfigError(file, bkey, "press and release come together (or use gestures)")
                if not (button.press or button.gestures):
                    raise ConfigError(file, bkey, "expected press and release, or gestures")
                for what in ("press", "release"):
                    for i, text in enumerate(getattr(button, what)):
                        _pattern(file, f"{bkey}.{what}[{i}]", text)
                for text in button.gestures:
                    _pattern(file, f"{bkey}.gestures.{text}", text)
                self.timings[button_name] = button.timing()
                config.declare_control(SOURCE, button_name)
        for beacon in self.config.beacons.values():
            for control in beacon.buttons:
                config.declare_control(SOURCE, control)
        if self.config.devices or self.config.beacons:
            # bleak-retry-connector (and with it dbus-fast) only for devices to connect to, not for beacons
            libraries = ["bleak", "bleak_retry_connector"] if self.config.devices else ["bleak"]
            self.enabled = import_extra(log, "softphone_ble", "ble", libraries, "the phone runs without its Bluetooth buttons")

    # --- lifecycle --------------------------------------------------------------------------------------

    @hookimpl
    def softphone_startup(self, phone: Phone) -> None:
        if not self.enabled:
            return
        self.phone = phone
        for name, config in self.config.devices.items():
            buttons = []
            for control, button in config.buttons.items():
                self._control(control)
                buttons.append(
                    _Button(
                        control,
                        [parse_pattern(p) for p in button.press],
                        [parse_pattern(p) for p in button.release],
                        [(parse_pattern(p), Gesture(g)) for p, g in button.gestures.items()],
                    )
                )
            device = _Device(name, config, buttons, DeviceStatus(log, SOURCE, name, phone))
            self.devices[name] = device
            device.task = phone.spawn(self._run_device(device))
        for name, config in self.config.beacons.items():
            for control in config.buttons:
                self._control(control)
            self.beacons[name] = _Beacon(name, config)
        if self.beacons:
            self._scanner_task = phone.spawn(self._run_scanner())

    @hookimpl
    def softphone_shutdown(self, phone: Phone) -> None:
        if self.phone is None:  # never started (nothing configured, or no bleak), or stopped already
            return
        for device in self.devices.values():
            if device.task is not None:
                device.task.cancel()  # its finally disconnects
        if self._scanner_task is not None:
            self._scanner_task.cancel()
        for control in self.controls.values():
            control.close()
        self.phone = None

    def tasks(self) -> list[asyncio.Task[None]]:
        """The plugin's running tasks (a test awaits them after shutdown to see the cleanup through)."""
        tasks = [d.task for d in self.devices.values() if d.task is not None]
        return tasks + ([self._scanner_task] if self._scanner_task is not None else [])

    def _control(self, name: str) -> InputControl:
        if name not in self.controls:
            assert self.phone is not None
            timing = self.timings.get(name, TimingConfig().timing())
            self.controls[name] = InputControl(self.phone, SOURCE, name, ControlKind.BUTTON, timing)
        return self.controls[name]

    def _bluez(self) -> dict[str, Any]:
        return {"bluez": {"adapter": self.config.adapter}} if self.config.adapter else {}

    def _backoff(self) -> Backoff:
        first = self.config.retry_first_s
        return Backoff(first, max(first, self.config.retry_max_s))

    # --- GATT devices -----------------------------------------------------------------------------------

    async def _run_device(self, device: _Device) -> None:
        from bleak import BleakClient
        from bleak_retry_connector import establish_connection

        config, status = device.config, device.status
        backoff = self._backoff()
        uuid = full_uuid(config.characteristic)
        who = config.address or repr(config.name)
        try:
            while True:
                try:
                    found = await self._find(config)
                except Exception as e:  # no adapter, no BlueZ, D-Bus refused: the phone goes on
                    status.set("unavailable", f"cannot scan: {_describe(e)}; retrying", level=logging.WARNING)
                    await asyncio.sleep(backoff.next())
                    continue
                if found is None:
                    status.set("not found", f"{who} is not advertising (asleep or away); searching", level=logging.WARNING)
                    await asyncio.sleep(backoff.next())
                    continue
                gone = asyncio.Event()
                try:
                    device.client = await establish_connection(
                        BleakClient, found, device.name, disconnected_callback=lambda _c, gone=gone: gone.set(), max_attempts=2
                    )
                    await device.client.start_notify(uuid, lambda _c, data: self._on_notify(device, bytes(data)))
                except Exception as e:
                    status.set("failed", f"{found.address}: {_describe(e)}; retrying", level=logging.WARNING)
                    await self._disconnect(device)
                    await asyncio.sleep(backoff.next())
                    continue
                status.set("connected", f"{found.address} {found.name or ''}".strip(), address=found.address)
                backoff.reset()
                await gone.wait()
                device.client = None
                for button in device.buttons:  # a press cut off by the link going is not a long press
                    self.controls[button.control].abort()
                status.set("disconnected", "searching for it again", level=logging.WARNING)
        finally:
            await self._disconnect(device)

    async def _find(self, config: GattDeviceConfig) -> BLEDevice | None:
        """Scan until the device advertises, or for ``scan_timeout_s``."""
        from bleak import BleakScanner

        found: asyncio.Future[BLEDevice] = asyncio.get_running_loop().create_future()

        def detected(device: BLEDevice, adv: AdvertisementData) -> None:
            if not found.done() and _wanted(config, device, adv):
                found.set_result(device)

        # The callback is in place before scanning starts: a device that advertises once and sleeps again
        # (as button remotes do) is not missed, as it can be by find_device_by_filter.
        async with BleakScanner(detected, **self._bluez()):
            try:
                return await asyncio.wait_for(found, self.config.scan_timeout_s)
            except asyncio.TimeoutError:
                return None

    async def _disconnect(self, device: _Device) -> None:
        client, device.client = device.client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), 5)
            except Exception as e:
                log.debug("ble %s: disconnect failed: %s", device.name, e)

    def _on_notify(self, device: _Device, data: bytes) -> None:
        handled = False
        for button in device.buttons:
            control = self.controls[button.control]
            for pattern, gesture in button.gestures:
                if matches(pattern, data):
                    control.gesture(gesture)
                    handled = True
            if any(matches(p, data) for p in button.press):
                control.edge(True)
                handled = True
            elif any(matches(p, data) for p in button.release):
                control.edge(False)
                handled = True
        if not handled:
            log.debug("ble %s: notification %s means nothing here", device.name, data.hex(" "))

    # --- connectionless buttons -------------------------------------------------------------------------

    async def _run_scanner(self) -> None:
        from bleak import BleakScanner

        assert self.phone is not None
        status = DeviceStatus(log, SOURCE, "scanner", self.phone)
        backoff = self._backoff()
        while True:
            scanner = BleakScanner(self._on_advertisement, **self._bluez())
            try:
                await scanner.start()
            except Exception as e:
                status.set("unavailable", f"cannot scan: {_describe(e)}; retrying", level=logging.WARNING)
                await asyncio.sleep(backoff.next())
                continue
            status.set("scanning", ", ".join(self.beacons))
            try:
                await asyncio.Event().wait()  # until cancelled
            finally:
                try:
                    await asyncio.wait_for(scanner.stop(), 5)
                except Exception as e:
                    log.debug("ble scanner: stop failed: %s", e)

    def _on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        data = adv.service_data.get(BTHOME_UUID)
        if data is None:
            return
        for beacon in self.beacons.values():
            if _wanted(beacon.config, device, adv):
                self._on_bthome(beacon, device.address, data)

    def _on_bthome(self, beacon: _Beacon, address: str, data: bytes) -> None:
        report = decode_bthome(data)
        if report is None:
            return
        if report.encrypted:
            if "encrypted" not in beacon.warned:
                beacon.warned.add("encrypted")
                log.warning("ble %s (%s): sends encrypted BTHome; turn encryption off on it", beacon.name, address)
            return
        if data == beacon.last:  # the same advertisement again (with the same packet id)
            return
        beacon.last = data
        for index, event in enumerate(report.buttons):
            gesture = BTHOME_GESTURES.get(event)
            if gesture is None or index >= len(beacon.config.buttons):
                continue
            self.controls[beacon.config.buttons[index]].gesture(gesture)


def _pattern(file: str, key: str, text: str) -> Pattern:
    try:
        return parse_pattern(text)
    except ValueError as e:
        raise ConfigError(file, key, f"{e}, got {text!r}") from None


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
