"""The headset keys plugin with an injected input device that yields real evdev.InputEvents and can vanish
(ENODEV), as a Bluetooth headset's AVRCP device does when the headset sleeps."""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from typing import Any

import pytest
from evdev import InputEvent, ecodes

from firmware_app.errors import ConfigError

HEADSET = '[headset_keys.devices.headset]\nname = "WH-1000XM4 (AVRCP)"\n'
RETRY = "[headset_keys]\nretry_first_s = 0.05\nretry_max_s = 0.2\n"


class FakeInputDevice:
    """Quacks like evdev.InputDevice: real InputEvents from a queue, ENODEV when it vanishes."""

    def __init__(self, name: str = "WH-1000XM4 (AVRCP)", path: str = "/dev/input/event7") -> None:
        self.name, self.path = name, path
        self.grabbed = self.closed = False
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def grab(self) -> None:
        self.grabbed = True

    def close(self) -> None:
        self.closed = True

    async def async_read_loop(self):
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def key(self, name: str, value: int) -> None:
        self._queue.put_nowait(InputEvent(1700000000, 0, ecodes.EV_KEY, ecodes.ecodes[name], value))
        self._queue.put_nowait(InputEvent(1700000000, 0, ecodes.EV_SYN, ecodes.SYN_REPORT, 0))

    def tap(self, name: str) -> None:
        self.key(name, 1)
        self.key(name, 0)

    def vanish(self) -> None:
        self._queue.put_nowait(OSError(errno.ENODEV, "No such device"))


class Opener:
    """Hands out devices in turn; ``None`` in the list means 'not there now'."""

    def __init__(self, *devices: FakeInputDevice | None) -> None:
        self.devices = list(devices)
        self.calls: list[tuple[Any, set[int]]] = []

    def __call__(self, config: Any, codes: set[int]) -> FakeInputDevice:
        self.calls.append((config, codes))
        device = self.devices.pop(0) if self.devices else None
        if device is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return device


def with_opener(opener: Opener):
    return lambda host: setattr(host.pm.get_plugin("softphone_headset_keys"), "opener", opener)


def test_avrcp_and_usb_keys_become_gestures(phone_rig) -> None:
    device = FakeInputDevice()

    async def scenario() -> None:
        async with phone_rig(["softphone_headset_keys"], HEADSET, before=with_opener(Opener(device))) as rig:
            await rig.wait(lambda: rig.device_states("headset") == [("headset", "connected")])
            assert device.grabbed
            device.tap("KEY_PLAYCD")  # AVRCP: the one button toggles play...
            device.tap("KEY_PAUSECD")  # ... and pause
            device.tap("KEY_A")  # not a headset key: ignored
            device.tap("KEY_MICMUTE")
            device.tap("KEY_NEXTSONG")  # the witness: read after all the keys before it
            assert await rig.witness(("headset", "next", "single")) == [
                ("headset", "main", "single"),
                ("headset", "main", "single"),
                ("headset", "mute", "single"),
                ("headset", "next", "single"),
            ]

    asyncio.run(scenario())


def test_autorepeat_is_not_a_press(phone_rig) -> None:
    device = FakeInputDevice()
    body = HEADSET + "[headset_keys.controls.volume_up]\nlong_press_ms = 200\n"

    async def scenario() -> None:
        async with phone_rig(["softphone_headset_keys"], body, before=with_opener(Opener(device))) as rig:
            await rig.wait(lambda: rig.device_states("headset"))
            device.key("KEY_VOLUMEUP", 1)
            for _ in range(6):  # the kernel repeats a held key every ~33 ms after 250 ms
                await asyncio.sleep(0.05)
                device.key("KEY_VOLUMEUP", 2)
            device.key("KEY_VOLUMEUP", 0)
            assert await rig.witness(("headset", "volume_up", "long")) == [("headset", "volume_up", "long")]
            device.tap("KEY_VOLUMEUP")  # a clean tap: the key is free again ...
            device.tap("KEY_MICMUTE")  # ... and another key: the witness that the release before it was read
            assert await rig.witness(("headset", "mute", "single")) == [
                ("headset", "volume_up", "long"),
                ("headset", "volume_up", "single"),
                ("headset", "mute", "single"),
            ]

    asyncio.run(scenario())


def test_a_vanished_device_is_reported_once_and_reopened(phone_rig, caplog_inputs) -> None:
    first, second = FakeInputDevice(), FakeInputDevice(path="/dev/input/event9")
    opener = Opener(first, None, None, None, second)

    async def scenario() -> None:
        async with phone_rig(["softphone_headset_keys"], RETRY + HEADSET, before=with_opener(opener)) as rig:
            await rig.wait(lambda: rig.device_states("headset"))
            first.key("KEY_PLAYCD", 1)  # held when the headset goes to sleep: no long press later
            first.vanish()  # read after the press, from the same queue
            await rig.wait(lambda: ("headset", "disconnected") in rig.device_states("headset"), what="the loss")
            pressed_by = time.monotonic()  # the press was handled before the loss was reported
            await rig.wait(lambda: len(rig.device_states("headset")) >= 4, what="reconnection")
            assert first.closed and second.grabbed
            # the time by which the press that was cut off would have been long (0.8 s): the stimulus, not the
            # evidence (the loop runs that press's timer before this sleep ends)
            await asyncio.sleep(max(0.0, pressed_by + 0.85 - time.monotonic()))
            second.tap("KEY_PLAYCD")  # a clean press ...
            second.tap("KEY_MICMUTE")  # ... and another key: the witness that both were read
            assert await rig.witness(("headset", "mute", "single")) == [
                ("headset", "main", "single"),
                ("headset", "mute", "single"),
            ]
            assert rig.device_states("headset") == [
                ("headset", "connected"),
                ("headset", "disconnected"),
                ("headset", "missing"),
                ("headset", "connected"),
            ]
            assert len(opener.calls) == 5  # opened, three misses, opened again
        assert second.closed
        warnings = [r.getMessage() for r in caplog_inputs.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 2, warnings  # disconnected, missing: once each, not once per retry
        assert "No such device" in warnings[0]

    asyncio.run(scenario())


def test_the_opener_gets_the_codes_of_the_configured_keys(phone_rig) -> None:
    opener = Opener(FakeInputDevice())
    body = '[headset_keys.devices.usb]\npath = "/dev/input/by-id/usb-Jabra-event-if03"\ngrab = false\n' \
           '[headset_keys.devices.usb.keys]\nKEY_MICMUTE = "mute"\nKEY_PHONE = "main"\n'

    async def scenario() -> None:
        async with phone_rig(["softphone_headset_keys"], body, before=with_opener(opener)) as rig:
            await rig.wait(lambda: rig.device_states("headset"))
            config, codes = opener.calls[0]
            assert config.path.endswith("if03") and codes == {ecodes.KEY_MICMUTE, ecodes.KEY_PHONE}
            assert rig.phone.config.controls == {"mute": {"headset"}, "main": {"headset"}}

    asyncio.run(scenario())


def test_shutdown_stops_reading_and_closes_the_device(phone_rig) -> None:
    device = FakeInputDevice()

    async def scenario() -> None:
        async with phone_rig(["softphone_headset_keys"], HEADSET, before=with_opener(Opener(device))) as rig:
            await rig.wait(lambda: rig.device_states("headset"))
            plugin = rig.host.pm.get_plugin("softphone_headset_keys")
            task = plugin.readers["headset"].task
        await asyncio.sleep(0)
        assert device.closed and task.cancelled()

    asyncio.run(scenario())


class FakeEvdevDevice:
    def __init__(self, path: str, name: str, keys: list[int]) -> None:
        self.path, self.name, self._keys, self.closed = path, name, keys, False

    def capabilities(self) -> dict[int, list[int]]:
        return {ecodes.EV_KEY: self._keys}

    def close(self) -> None:
        self.closed = True


def test_finding_a_device_by_name_takes_the_one_with_the_keys(monkeypatch) -> None:
    import evdev

    from softphone_headset_keys import DeviceConfig, open_input_device

    devices = {
        "/dev/input/event3": FakeEvdevDevice("/dev/input/event3", "Jabra Evolve2 65 Consumer Control", [ecodes.KEY_VOLUMEUP]),
        "/dev/input/event4": FakeEvdevDevice("/dev/input/event4", "Jabra Evolve2 65", [ecodes.KEY_MICMUTE]),
        "/dev/input/event5": FakeEvdevDevice("/dev/input/event5", "AT Translated Set 2 keyboard", [ecodes.KEY_MICMUTE]),
    }
    opened: list[str] = []

    def open_path(path: str) -> FakeEvdevDevice:
        opened.append(path)
        return devices[path]

    monkeypatch.setattr(evdev, "list_devices", lambda writable=True: list(devices))
    monkeypatch.setattr(evdev, "InputDevice", open_path)
    found = open_input_device(DeviceConfig(name="jabra evolve2"), {ecodes.KEY_MICMUTE})
    assert found is devices["/dev/input/event4"]
    assert devices["/dev/input/event3"].closed and not found.closed
    with pytest.raises(FileNotFoundError) as missing:
        open_input_device(DeviceConfig(name="Poly"), {ecodes.KEY_MICMUTE})
    assert all(d.closed for p, d in devices.items() if p != "/dev/input/event4")
    assert "input group" not in str(missing.value)

    def denied(path: str) -> FakeEvdevDevice:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(evdev, "InputDevice", denied)
    with pytest.raises(FileNotFoundError, match="3 could not be opened: is the service's user in the input group"):
        open_input_device(DeviceConfig(name="jabra"), {ecodes.KEY_MICMUTE})


@pytest.mark.parametrize(
    ("body", "key", "expected"),
    [
        (HEADSET + '[headset_keys.devices.headset.keys]\nKEY_PLAYCDX = "main"\n',
         "headset_keys.devices.headset.keys.KEY_PLAYCDX", "unknown key"),
        (HEADSET + 'path = "/dev/input/event3"\n', "headset_keys.devices.headset", "name or its path"),
        (HEADSET + '[headset_keys.controls.hook]\nlong_press_ms = 900\n', "headset_keys.controls.hook", "no key"),
        (HEADSET + 'grab = "yes"\n', "headset_keys.devices.headset.grab", "true or false"),
        (HEADSET + '[buttons.controls.next.in_call]\nsingle = "hold"\n[buttons.controls.nexy.in_call]\nsingle = "hold"\n',
         "buttons.controls.nexy", "next (headset)"),
    ],
)
def test_configuration_mistakes_name_the_file_and_key(tmp_path, body, key, expected) -> None:
    from firmware_app import app
    from tests.inputs.conftest import write_config

    path = write_config(tmp_path, ["softphone_calls", "softphone_buttons", "softphone_headset_keys"], body)
    with pytest.raises(ConfigError) as e:
        app.prepare(str(path), secrets=False, strict=True)
    assert e.value.key == key and expected in e.value.expected, str(e.value)
