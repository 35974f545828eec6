"""The mapping of gestures to actions as the input plugins see it: defaults, named controls, declared names."""

from __future__ import annotations

from firmware_app import app
from firmware_app.model import ButtonEvent, Gesture, PhoneState
from tests.inputs.conftest import write_config

KEYS = '[headset_keys.devices.headset]\nname = "Headset (AVRCP)"\n'


def host_for(tmp_path, plugins: list[str], body: str = KEYS):
    path = write_config(tmp_path, ["softphone_calls", "softphone_buttons", "softphone_headset_keys", *plugins], body)
    return app.prepare(str(path), secrets=False, strict=True)


def test_headset_defaults(tmp_path) -> None:
    config, host = host_for(tmp_path, ["softphone_transfer"])
    assert config.controls == {c: {"headset"} for c in ("main", "next", "previous", "volume_up", "volume_down", "mute")}

    def action(button: str, state: PhoneState, gesture: Gesture) -> str | None:
        return host.map_input(ButtonEvent("headset", button, gesture), state)

    assert action("main", PhoneState.RINGING, Gesture.SINGLE) == "answer"
    assert action("main", PhoneState.RINGING, Gesture.LONG) == "reject"
    assert action("main", PhoneState.IN_CALL, Gesture.SINGLE) == "hangup"
    assert action("main", PhoneState.IN_CALL, Gesture.LONG) == "hold_toggle"
    assert action("main", PhoneState.IN_CALL, Gesture.DOUBLE) == "transfer"
    assert action("main", PhoneState.ON_HOLD, Gesture.LONG) == "hold_toggle"
    assert action("mute", PhoneState.IN_CALL, Gesture.SINGLE) == "mute_call_toggle"
    assert action("mute", PhoneState.RINGING, Gesture.SINGLE) is None  # a mute key never answers ...
    assert action("mute", PhoneState.IN_CALL, Gesture.LONG) is None  # ... nor holds
    assert action("volume_up", PhoneState.IN_CALL, Gesture.SINGLE) is None  # no plugin offers volume_up here
    assert action("next", PhoneState.IN_CALL, Gesture.SINGLE) == "hangup"  # an unnamed control is the main one
    assert host.wants_double("headset", "main", PhoneState.IN_CALL)
    assert not host.wants_double("headset", "main", PhoneState.RINGING)
    assert not host.wants_double("headset", "mute", PhoneState.IN_CALL)


def test_without_a_transfer_plugin_a_single_press_does_not_wait(tmp_path) -> None:
    _, host = host_for(tmp_path, [])
    assert host.map_input(ButtonEvent("headset", "main", Gesture.DOUBLE), PhoneState.IN_CALL) is None
    assert not host.wants_double("headset", "main", PhoneState.IN_CALL)


def test_a_control_mapping_overrides_and_switches_off(tmp_path) -> None:
    body = KEYS + '[buttons.controls.next.in_call]\nsingle = "transfer:reception"\n[buttons.controls.main.ringing]\nlong = ""\n'
    _, host = host_for(tmp_path, ["softphone_transfer"], body)
    assert host.map_input(ButtonEvent("headset", "next", Gesture.SINGLE), PhoneState.IN_CALL) == "transfer:reception"
    assert host.map_input(ButtonEvent("headset", "main", Gesture.LONG), PhoneState.RINGING) is None
    assert host.map_input(ButtonEvent("headset", "main", Gesture.SINGLE), PhoneState.RINGING) == "answer"
