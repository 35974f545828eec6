"""The BLE plugin against a fake BlueZ (BlueZoo on a private D-Bus system bus) and a real GATT button on a
second virtual adapter: discovery, connection, notifications -> gestures, link loss, the button going
away and coming back, and connectionless BTHome buttons."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_app.errors import ConfigError
from firmware_app.model import Gesture, PhoneState
from softphone_ble import BTHOME_UUID, decode_bthome, matches, parse_pattern
from tests.inputs.fake_bluez import BUTTON, CHAR_UUID, FakeBluez, FakeButton

FAST = "long_press_ms = 500\ndouble_press_ms = 400\nmin_press_ms = 0\n"
BLE = 'adapter = "hci0"\nscan_timeout_s = 2.5\nretry_first_s = 0.2\nretry_max_s = 0.5\n'  # BlueZoo rescans every second


@pytest.fixture(scope="module")
def bluez(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeBluez]:
    world = FakeBluez(tmp_path_factory.mktemp("bluez")).start()
    yield world
    world.stop()


@pytest.fixture
def system_bus(bluez: FakeBluez, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bluez.address)
    return bluez.address


def gatt_config(by: str = f'address = "{BUTTON}"') -> str:
    return (
        f"[ble]\n{BLE}\n[ble.devices.shutter]\n{by}\ncharacteristic = \"ff01\"\n"
        f'[ble.devices.shutter.buttons.main]\npress = ["01"]\nrelease = ["00"]\n{FAST}'
        '[ble.devices.shutter.buttons.main.gestures]\n"02 ??" = "double"\n'
        f'[ble.devices.shutter.buttons.volume_up]\npress = ["11"]\nrelease = ["10"]\n{FAST}'
    )


async def stop_plugin(rig) -> None:
    """What the phone does at shutdown, and then waits long enough for: the plugin's cleanup."""
    plugin = rig.host.pm.get_plugin("softphone_ble")
    tasks = plugin.tasks()
    rig.host.shutdown(rig.phone)
    await asyncio.wait(tasks, timeout=5)


def test_discover_connect_and_turn_notifications_into_gestures(system_bus, phone_rig, caplog_inputs) -> None:
    async def scenario() -> None:
        button = await FakeButton(system_bus).start()
        try:
            await button.serve()
            await button.advertise()
            async with phone_rig(["softphone_ble"], gatt_config()) as rig:
                await rig.wait(lambda: ("shutter", "connected") in rig.device_states("ble"), 10, "connection")
                await rig.wait(lambda: button.char.notifying, 5, "the subscription")
                button.notify(b"\x01")  # pressed ...
                await asyncio.sleep(0.05)
                button.notify(b"\x00")  # ... released
                assert await rig.wait_inputs(1) == [("ble", "main", "single")]
                button.notify(b"\x02\x07")  # the remote recognised a double itself
                button.notify(b"\x11")
                await asyncio.sleep(0.7)  # held past long_press_ms
                button.notify(b"\x10")
                button.notify(b"\x7f")  # means nothing
                assert await rig.wait_inputs(3) == [
                    ("ble", "main", "single"),
                    ("ble", "main", "double"),
                    ("ble", "volume_up", "long"),
                ]
                await stop_plugin(rig)
            assert not await button.connected()  # shutdown disconnected it
        finally:
            await button.close()

    asyncio.run(scenario())


def test_a_press_waits_for_a_double_only_when_the_state_maps_one(system_bus, phone_rig) -> None:
    async def scenario() -> None:
        button = await FakeButton(system_bus).start()
        try:
            await button.serve()
            await button.advertise()
            body = gatt_config('name = "Shutter"') + '[buttons.controls.main.in_call]\ndouble = "hold"\n'
            async with phone_rig(["softphone_ble"], body) as rig:
                await rig.wait(lambda: button.char.notifying, 10, "the subscription")

                async def two_presses() -> None:
                    for _ in range(2):
                        button.notify(b"\x01")
                        await asyncio.sleep(0.03)
                        button.notify(b"\x00")
                        await asyncio.sleep(0.05)

                await two_presses()  # idle: nothing maps a double, so two singles at once
                assert await rig.wait_inputs(2) == [("ble", "main", "single")] * 2
                await rig.set_state(PhoneState.IN_CALL)
                await two_presses()
                assert await rig.wait_inputs(3) == [("ble", "main", "single")] * 2 + [("ble", "main", "double")]
                await stop_plugin(rig)
        finally:
            await button.close()

    asyncio.run(scenario())


def test_link_loss_reconnects_and_a_sleeping_button_is_searched_for(system_bus, phone_rig, caplog_inputs) -> None:
    async def scenario() -> None:
        button = await FakeButton(system_bus).start()
        try:
            await button.serve()
            await button.advertise()
            async with phone_rig(["softphone_ble"], gatt_config()) as rig:
                await rig.wait(lambda: button.char.notifying, 10, "the subscription")
                button.notify(b"\x01")  # held when the link drops: must not become a long press
                button.notify(b"\x02\x07")  # a gesture the remote recognised: the witness that the press arrived
                assert await rig.witness(("ble", "main", "double")) == [("ble", "main", "double")]
                pressed_by = time.monotonic()  # the press was handled before the witness

                await button.drop_link()  # out of range for a moment: still advertising
                await rig.wait(lambda: rig.device_states("ble").count(("shutter", "connected")) == 2, 10, "reconnect")
                # the time by which the press cut off by the drop would have been long (the stimulus, not the
                # evidence: the loop runs that press's timer before this sleep ends)
                await asyncio.sleep(max(0.0, pressed_by + 0.55 - time.monotonic()))
                button.notify(b"\x01")  # a clean press ...
                button.notify(b"\x00")
                button.notify(b"\x11")  # ... and one of another button: the witness that both were handled
                button.notify(b"\x10")
                assert await rig.witness(("ble", "volume_up", "single")) == [
                    ("ble", "main", "double"),
                    ("ble", "main", "single"),
                    ("ble", "volume_up", "single"),
                ]

                # asleep: no advertising, no GATT, link gone and forgotten; the phone searches with a backoff
                await button.stop_advertising()
                await button.unserve()
                button.char.notifying = False
                await button.forget()
                await rig.wait(lambda: ("shutter", "not found") in rig.device_states("ble"), 10, "searching")
                # the witness of another failed search (checked at the end: quietly): its debug line
                await rig.wait(lambda: logged(caplog_inputs, "shutter still not found"), 10, "a failed search")
                await button.serve()  # awake again
                await button.advertise()
                await rig.wait(lambda: rig.device_states("ble").count(("shutter", "connected")) == 3, 10, "back")
                await rig.wait(lambda: button.char.notifying, 5, "the subscription")
                button.notify(b"\x01")
                button.notify(b"\x00")
                assert await rig.wait_inputs(4) == [
                    ("ble", "main", "double"),
                    ("ble", "main", "single"),
                    ("ble", "volume_up", "single"),
                    ("ble", "main", "single"),
                ]
                states = [state for _, state in rig.device_states("ble")]
                assert states[:4] == ["connected", "disconnected", "connected", "disconnected"]
                # bleak may take the link's last property change for an advertisement and try once more
                assert states[4:] in (["not found", "connected"], ["failed", "not found", "connected"]), states
                await stop_plugin(rig)
        finally:
            await button.close()
        lines = [r.getMessage() for r in caplog_inputs.records if r.name == "firmware_app.ble" and r.levelno >= logging.INFO]
        assert len(lines) == len(states), lines  # one line per change, none per retry

    asyncio.run(scenario())


def test_without_bluetooth_the_plugin_says_so_once_and_the_phone_works(tmp_path: Path, monkeypatch, phone_rig, caplog_inputs) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-such-bus")
    from firmware_app.model import ButtonEvent

    async def scenario() -> None:
        async with phone_rig(["softphone_ble"], gatt_config()) as rig:
            await rig.wait(lambda: rig.device_states("ble"), 5, "a report")
            # the witness of a retry that failed (checked below: quietly): its debug line
            await rig.wait(lambda: logged(caplog_inputs, "shutter still unavailable"), 5, "a failed retry")
            rig.phone.input(ButtonEvent("cli", "main", Gesture.SINGLE))
            assert await rig.wait_inputs(1) == [("cli", "main", "single")]
            assert rig.device_states("ble") == [("shutter", "unavailable")]
            await stop_plugin(rig)

    asyncio.run(scenario())
    warnings = [r for r in caplog_inputs.records if r.name == "firmware_app.ble" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cannot scan" in warnings[0].getMessage()


def logged(caplog, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


def bthome(packet_id: int, *events: int) -> bytes:
    return bytes([0x40, 0x00, packet_id, 0x01, 87, *[b for e in events for b in (0x3A, e)]])


def test_connectionless_bthome_buttons(system_bus, phone_rig) -> None:
    body = f'[ble]\n{BLE}\n[ble.beacons.blu]\nname = "SBBT-002C"\nbuttons = ["main", "mute"]\n'

    async def scenario() -> None:
        button = await FakeButton(system_bus, name="SBBT-002C").start()
        try:
            await button.advertise({BTHOME_UUID: bthome(1, 0, 0)}, uuids=[])
            async with phone_rig(["softphone_ble"], body) as rig:
                await rig.wait(lambda: ("scanner", "scanning") in rig.device_states("ble"), 10, "the scanner")
                beacon = rig.host.pm.get_plugin("softphone_ble").beacons["blu"]
                # the idle advertisement was decoded (any gesture in it was handed on before this) ...
                await rig.wait(lambda: beacon.last == bthome(1, 0, 0), 10, "the idle advertisement")
                button.adv.set_service_data(BTHOME_UUID, bthome(2, 0x01, 0x00))  # first button: press
                assert await rig.witness(("ble", "main", "single")) == [("ble", "main", "single")]
                button.adv.set_service_data(BTHOME_UUID, bthome(3, 0x00, 0x04))  # second: long press
                # ... and a long press of the second button, which it cannot have made, is the witness: nothing else
                assert await rig.witness(("ble", "mute", "long")) == [("ble", "main", "single"), ("ble", "mute", "long")]
                await stop_plugin(rig)
        finally:
            await button.close()

    asyncio.run(scenario())


def test_bthome_decoding() -> None:
    report = decode_bthome(bthome(9, 0x02, 0x80))
    assert report is not None and report.packet_id == 9 and report.buttons == (0x02, 0x80)
    # a temperature (2 bytes) before the button is skipped by its length
    assert decode_bthome(bytes([0x40, 0x02, 0xC4, 0x09, 0x3A, 0x01])).buttons == (0x01,)
    assert decode_bthome(bytes([0x41, 0x00, 1])).encrypted
    assert decode_bthome(bytes([0x02, 0x00])) is None  # not version 2
    assert decode_bthome(bytes([0x40, 0x3A])).buttons == ()  # truncated


def test_bthome_repeats_are_acted_on_once(phone_rig) -> None:
    body = '[ble.beacons.blu]\naddress = "3C:2E:F5:00:00:01"\nbuttons = ["main"]\n'

    async def scenario() -> None:
        async with phone_rig(["softphone_ble"], body) as rig:
            plugin = rig.host.pm.get_plugin("softphone_ble")
            plugin.softphone_shutdown(rig.phone)  # no radio here: feed the decoder directly
            beacon = plugin.beacons["blu"]
            for data in (bthome(5, 1), bthome(5, 1), bthome(5, 1), bthome(6, 2), bthome(6, 2)):
                plugin._on_bthome(beacon, "3C:2E:F5:00:00:01", data)
            plugin._on_bthome(beacon, "3C:2E:F5:00:00:01", bthome(7, 4))  # a long press: the witness, after the repeats
            assert await rig.witness(("ble", "main", "long")) == [
                ("ble", "main", "single"),
                ("ble", "main", "double"),
                ("ble", "main", "long"),
            ]

    asyncio.run(scenario())


def test_patterns() -> None:
    assert parse_pattern("01 ?? ff") == (1, None, 255)
    assert parse_pattern("a0:01") == (0xA0, 1)
    assert matches(parse_pattern("02 ??"), b"\x02\x07") and not matches(parse_pattern("02 ??"), b"\x02")
    with pytest.raises(ValueError):
        parse_pattern("1")


@pytest.mark.parametrize(
    ("body", "key", "expected"),
    [
        (gatt_config().replace(f'address = "{BUTTON}"', 'address = "nope"'), "ble.devices.shutter.address", "AA:BB"),
        (gatt_config().replace(f'address = "{BUTTON}"', ""), "ble.devices.shutter", "address or its name"),
        (gatt_config().replace('"ff01"', '"ff01x"'), "ble.devices.shutter.characteristic", "UUID"),
        (gatt_config().replace('release = ["00"]', 'release = ["0g"]'), "ble.devices.shutter.buttons.main.release[0]", "0g"),
        (gatt_config().replace('release = ["00"]\n', ""), "ble.devices.shutter.buttons.main", "press and release"),
        (gatt_config().replace('"double"', '"triple"'), "ble.devices.shutter.buttons.main.gestures.02 ??", "'single'"),
        ('[ble.beacons.b]\nname = "x"\nbuttons = []\n', "ble.beacons.b.buttons", "length"),
        ('[ble.beacons.b]\nname = "x"\nbuttons = ["main"]\n[buttons.controls.mian.idle]\nsingle = "hangup"\n',
         "buttons.controls.mian", "main (ble)"),
    ],
)
def test_configuration_mistakes_name_the_file_and_key(tmp_path, body, key, expected) -> None:
    from firmware_app import app
    from tests.inputs.conftest import write_config

    path = write_config(tmp_path, ["softphone_calls", "softphone_buttons", "softphone_ble"], body)
    with pytest.raises(ConfigError) as e:
        app.prepare(str(path), secrets=False, strict=True)
    assert e.value.key == key and expected in e.value.expected, str(e.value)


def test_the_characteristic_of_the_fake_is_the_configured_one() -> None:
    from softphone_ble import full_uuid

    assert full_uuid("ff01") == CHAR_UUID == full_uuid(CHAR_UUID.upper())
