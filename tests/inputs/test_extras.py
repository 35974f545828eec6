"""The input plugins' libraries are imported only for a configured device, and a missing one is one line.

What a phone imports is seen in a fresh process (``tests/inputs/idle_phone.py``), where no other test's
imports count; the phone with a device configured is the witness that the check sees a library at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_app.model import ButtonEvent, Gesture

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = '[account]\nregistrar = "pbx.test"\nuser = "1000"\n'
GPIO = "[gpio.buttons.main]\npin = 17\n"
BLE_DEVICE = (
    '[ble.devices.shutter]\naddress = "AA:BB:CC:DD:EE:FF"\ncharacteristic = "ff01"\n'
    '[ble.devices.shutter.buttons.main]\npress = ["01"]\nrelease = ["00"]\n'
)
BLE_BEACON = '[ble.beacons.blu]\nname = "SBBT-002C"\nbuttons = ["main"]\n'
HEADSET = '[headset_keys.devices.headset]\npath = "/dev/input/no-such-event"\n'


def idle_phone(tmp_path: Path, body: str | None = None) -> dict:
    """The report of ``python -m tests.inputs.idle_phone``: no GPIO here (mock pins) and no D-Bus."""
    args = [sys.executable, "-m", "tests.inputs.idle_phone"]
    if body is not None:
        config = tmp_path / "config.toml"
        config.write_text(ACCOUNT + body)
        args.append(str(config))
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock", "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus"}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_phone_without_input_devices_imports_no_input_library(tmp_path: Path) -> None:
    report = idle_phone(tmp_path)
    assert {"softphone_gpio", "softphone_ble", "softphone_headset_keys"} <= set(report["plugins"])
    assert report["input_libraries"] == [] and report["errors"] == []


@pytest.mark.parametrize(
    ("body", "libraries"),
    [
        (GPIO, ["gpiozero"]),
        (BLE_DEVICE, ["bleak", "bleak_retry_connector", "dbus_fast"]),
        (BLE_BEACON, ["bleak", "dbus_fast"]),  # no connections: no bleak-retry-connector
        (HEADSET, ["evdev"]),
    ],
    ids=["gpio", "ble-device", "ble-beacon", "headset-keys"],
)
def test_a_configured_device_imports_its_own_library_only(tmp_path: Path, body: str, libraries: list[str]) -> None:
    report = idle_phone(tmp_path, body)
    assert report["input_libraries"] == libraries and report["errors"] == []


@pytest.mark.parametrize(
    ("plugin", "body", "missing", "extra"),
    [
        ("softphone_gpio", GPIO + "[gpio.leds.status]\npin = 27\n", "gpiozero", "gpio"),
        ("softphone_ble", BLE_BEACON, "bleak", "ble"),
        ("softphone_ble", BLE_DEVICE, "bleak_retry_connector", "ble"),
        ("softphone_headset_keys", HEADSET, "evdev", "headset-keys"),
    ],
    ids=["gpio", "ble-beacon", "ble-device", "headset-keys"],
)
def test_a_missing_extra_is_one_line_and_the_phone_works(
    phone_rig, caplog_inputs, monkeypatch, plugin: str, body: str, missing: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # not installed: importing it raises ImportError

    async def scenario() -> None:
        async with phone_rig([plugin], body) as rig:
            assert rig.host.pm.get_plugin(plugin).phone is None  # started nothing, so stops nothing
            rig.phone.input(ButtonEvent("cli", "main", Gesture.SINGLE))
            assert await rig.wait_inputs(1) == [("cli", "main", "single")]
            assert not [e for e in rig.events if e["event"] == "input_device"]

    asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog_inputs.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{plugin}: {missing} is not installed") and f"pip install 'firmware-app[{extra}]'" in lines[0]


def test_unconfigured_input_plugins_start_and_stop_nothing(phone_rig, caplog_inputs) -> None:
    plugins = ["softphone_gpio", "softphone_ble", "softphone_headset_keys"]

    async def scenario() -> None:
        async with phone_rig(plugins) as rig:
            assert all(rig.host.pm.get_plugin(p).phone is None for p in plugins)
            rig.phone.input(ButtonEvent("cli", "main", Gesture.SINGLE))
            assert await rig.wait_inputs(1) == [("cli", "main", "single")]

    asyncio.run(scenario())
    names = ("firmware_app.gpio", "firmware_app.ble", "firmware_app.headset_keys")
    assert [r.getMessage() for r in caplog_inputs.records if r.name in names] == []
