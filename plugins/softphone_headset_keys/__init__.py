"""Plugin: headset and remote keys that Linux presents as input devices, through python-evdev.

Bluetooth headsets' media keys (AVRCP: KEY_PLAYCD, KEY_PAUSECD, KEY_NEXTSONG...), Bluetooth and BLE HID
remotes, and USB headset keys (mic mute is KEY_MICMUTE) all arrive as ``/dev/input/event*`` devices. Each
configured device is found by name or path, grabbed (the phone alone reads it), and opened again after it
disappears (a Bluetooth headset that sleeps or walks away). See README.md here.

```toml
[headset_keys.devices.headset]
name = "Jabra Evolve2 65"    # the device's name (as ``evtest`` lists it), or a part of it
# keys = { KEY_PLAYCD = "main", KEY_PAUSECD = "main", KEY_MICMUTE = "mute" }   # the default is broader
[headset_keys.controls.main]   # optional timing of a control
long_press_ms = 1200
```
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Callable, Protocol

import msgspec
from msgspec import Meta

from firmware_app import Phone, hookimpl
from firmware_app.config import Config
from firmware_app.errors import ConfigError
from firmware_app.extras import import_extra
from firmware_app.gestures import ControlKind, TimingConfig
from firmware_app.inputs import Backoff, DeviceStatus, InputControl

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from evdev import InputEvent


log = logging.getLogger("firmware_app.headset_keys")

SOURCE = "headset"
EV_KEY = 0x01
KEY_UP, KEY_DOWN, KEY_REPEAT = 0, 1, 2

#: What a headset's keys are, by default. AVRCP toggles between PLAYCD and PAUSECD on one button.
DEFAULT_KEYS = {
    "KEY_PLAYCD": "main",
    "KEY_PAUSECD": "main",
    "KEY_PLAYPAUSE": "main",
    "KEY_PHONE": "main",
    "KEY_NEXTSONG": "next",
    "KEY_PREVIOUSSONG": "previous",
    "KEY_VOLUMEUP": "volume_up",
    "KEY_VOLUMEDOWN": "volume_down",
    "KEY_MICMUTE": "mute",
}


class KeyControlConfig(TimingConfig, kw_only=True, frozen=True, forbid_unknown_fields=True):
    # Keys are not contacts: no bounce, and AVRCP may deliver a tap's press and release together.
    min_press_ms: Annotated[int, Meta(ge=0, le=90)] = 0


class DeviceConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    name: str = ""  # the input device's name, or a part of it (case does not matter)
    path: str = ""  # or its path, e.g. /dev/input/by-id/usb-Jabra_..-event-if03
    keys: dict[str, str] = {}  # evdev key name -> control name; empty: DEFAULT_KEYS
    grab: bool = True  # read the device alone (nothing else on the system sees its keys)

    def keymap(self) -> dict[str, str]:
        return self.keys or DEFAULT_KEYS

    def describe(self) -> str:
        return self.path or repr(self.name)


class HeadsetKeysConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    devices: dict[str, DeviceConfig] = {}
    controls: dict[str, KeyControlConfig] = {}
    retry_first_s: Annotated[float, Meta(ge=0.05, le=60)] = 1.0
    retry_max_s: Annotated[float, Meta(ge=0.05, le=3600)] = 30.0


class InputDeviceLike(Protocol):
    """What the plugin uses of ``evdev.InputDevice`` (tests hand in their own)."""

    name: str
    path: str

    def grab(self) -> None: ...
    def close(self) -> None: ...
    def async_read_loop(self) -> AsyncIterator[InputEvent]: ...


Opener = Callable[[DeviceConfig, set[int]], InputDeviceLike]


def open_input_device(config: DeviceConfig, codes: set[int]) -> InputDeviceLike:
    """The first input device with this path, or with this name that has one of ``codes`` among its keys.

    A USB headset has several input devices under one name (consumer keys, telephony keys): the key
    codes tell which one to read. Raises FileNotFoundError when none is there now.
    """
    import evdev

    if config.path:
        return evdev.InputDevice(config.path)
    wanted = config.name.casefold()
    denied = 0
    for path in sorted(evdev.list_devices(writable=False)):
        try:
            device = evdev.InputDevice(path)
        except PermissionError:
            denied += 1
            continue
        except OSError:
            continue  # gone between the listing and the open
        keys = set(device.capabilities().get(EV_KEY, []))
        if wanted in device.name.casefold() and keys & codes:
            return device
        device.close()
    hint = f"; {denied} could not be opened: is the service's user in the input group?" if denied else ""
    raise FileNotFoundError(f"no input device named like {config.name!r} with these keys{hint}")


@dataclass
class _Reader:
    name: str
    config: DeviceConfig
    codes: dict[int, str]  # key code -> control name
    status: DeviceStatus
    task: asyncio.Task[None] | None = None
    device: InputDeviceLike | None = None


class HeadsetKeysPlugin:
    def __init__(self, opener: Opener | None = None) -> None:
        self.opener: Opener = opener or open_input_device
        self.config = HeadsetKeysConfig()
        self.readers: dict[str, _Reader] = {}
        self.controls: dict[str, InputControl] = {}
        self.phone: Phone | None = None
        self.enabled = False  # something is configured and python-evdev is installed

    @hookimpl
    def softphone_configure(self, config: Config) -> None:
        file = str(config.path)
        self.config = config.convert(config.section("headset_keys"), HeadsetKeysConfig, "headset_keys")
        if not self.config.devices:
            return
        self.enabled = import_extra(
            log, "softphone_headset_keys", "headset-keys", ["evdev"], "the phone runs without its headset keys"
        )
        known: set[str] | None = None  # the key names evdev knows; without evdev only their form is checked
        if self.enabled:
            from evdev import ecodes

            known = {name for name, code in ecodes.ecodes.items() if isinstance(code, int)}
        names: set[str] = set()
        for device_name, device in self.config.devices.items():
            key = f"headset_keys.devices.{device_name}"
            if bool(device.name) == bool(device.path):
                raise ConfigError(file, key, "give the device's name or its path (one of them)")
            for key_name, control in device.keymap().items():
                if not key_name.startswith(("KEY_", "BTN_")) or (known is not None and key_name not in known):
                    raise ConfigError(file, f"{key}.keys.{key_name}", "unknown key (an evdev name like KEY_PLAYCD)")
                if not control:
                    raise ConfigError(file, f"{key}.keys.{key_name}", "expected a control name")
                names.add(control)
        for control in self.config.controls:
            if control not in names:
                raise ConfigError(file, f"headset_keys.controls.{control}", f"no key is mapped to it (controls: {', '.join(sorted(names))})")
        for control in sorted(names):
            config.declare_control(SOURCE, control)

    @hookimpl
    def softphone_startup(self, phone: Phone) -> None:
        if not self.enabled:
            return
        from evdev import ecodes

        self.phone = phone
        for device_name, device in self.config.devices.items():
            codes = {ecodes.ecodes[k]: c for k, c in device.keymap().items()}
            for control in codes.values():
                if control not in self.controls:
                    timing = self.config.controls.get(control, KeyControlConfig()).timing()
                    self.controls[control] = InputControl(phone, SOURCE, control, ControlKind.BUTTON, timing)
            reader = _Reader(device_name, device, codes, DeviceStatus(log, SOURCE, device_name, phone))
            self.readers[device_name] = reader
            reader.task = phone.spawn(self._read(reader))

    @hookimpl
    def softphone_shutdown(self, phone: Phone) -> None:
        if self.phone is None:  # never started (nothing configured, or no evdev), or stopped already
            return
        for reader in self.readers.values():
            if reader.task is not None:
                reader.task.cancel()  # closing the device does not end evdev's read loop
            self._close(reader)
        for control in self.controls.values():
            control.close()
        self.readers.clear()
        self.controls.clear()
        self.phone = None

    async def _read(self, reader: _Reader) -> None:
        backoff = Backoff(self.config.retry_first_s, max(self.config.retry_first_s, self.config.retry_max_s))
        where = reader.config.describe()
        while True:
            try:
                reader.device = self.opener(reader.config, set(reader.codes))
            except OSError as e:
                reader.status.set("missing", f"{where}: {_reason(e)}; retrying", level=logging.WARNING)
                await asyncio.sleep(backoff.next())
                continue
            device = reader.device
            if reader.config.grab:
                try:
                    device.grab()
                except OSError as e:  # another program grabbed it: read it anyway
                    log.warning("headset %s: cannot grab %s (%s); reading it shared", reader.name, device.path, _reason(e))
            reader.status.set("connected", f"{device.name} at {device.path}", path=device.path)
            backoff.reset()
            try:
                async for event in device.async_read_loop():
                    self._on_event(reader, event)
            except OSError as e:
                if e.errno != errno.ENODEV:
                    log.debug("headset %s: read failed", reader.name, exc_info=True)
                reader.status.set("disconnected", f"{_reason(e)}; reopening", level=logging.WARNING)
            self._close(reader)
            await asyncio.sleep(backoff.next())

    def _on_event(self, reader: _Reader, event: InputEvent) -> None:
        if event.type != EV_KEY or event.value == KEY_REPEAT:  # autorepeat is not a press
            return
        control = reader.codes.get(event.code)
        if control is not None:
            self.controls[control].edge(event.value == KEY_DOWN)

    def _close(self, reader: _Reader) -> None:
        device, reader.device = reader.device, None
        if device is None:
            return
        for control in set(reader.codes.values()):  # a key held when the device went is not a long press
            self.controls[control].abort()
        try:
            device.close()  # also lets go of the grab
        except OSError:
            pass


def _reason(error: OSError) -> str:
    return os.strerror(error.errno) if error.errno else str(error)
