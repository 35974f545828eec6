"""Built-in plugin: which action a gesture means in each phone state, from ``[buttons]``.

Defaults follow real headsets: a single press answers a ringing call and hangs up an active one, a long
press rejects a ringing call and toggles hold in a call, a double press in a call blind-transfers to the
default target. A hook switch (a level input) answers when lifted (down) and hangs up when put back (up).
A control named ``mute`` toggles the microphone and ``volume_up``/``volume_down`` run the actions of those
names instead; a default whose action no loaded plugin offers is left out.

```toml
[buttons.default.in_call]        # for every control
double = "transfer:agents"
[buttons.controls.mute.in_call]  # for the control named "mute" only
single = "mute_call_toggle"
```

A name under ``[buttons.controls]`` must be a control some input plugin reads
(``config.declare_control``); an unknown control, phone state, gesture or action is a configuration error.
"""

from __future__ import annotations

from typing import Any

from firmware_app import hookimpl
from firmware_app.config import Config
from firmware_app.errors import ConfigError
from firmware_app.model import ButtonEvent, Gesture, PhoneState

Mapping = dict[PhoneState, dict[Gesture, str]]

DEFAULTS: Mapping = {
    PhoneState.IDLE: {},
    PhoneState.RINGING: {Gesture.SINGLE: "answer", Gesture.LONG: "reject", Gesture.DOWN: "answer"},
    PhoneState.IN_CALL: {
        Gesture.SINGLE: "hangup",
        Gesture.LONG: "hold_toggle",
        Gesture.DOUBLE: "transfer",
        Gesture.UP: "hangup",
    },
    # Call waiting: another call rings while one is up: a press answers it (the first goes on hold).
    PhoneState.WAITING: {Gesture.SINGLE: "answer", Gesture.LONG: "reject", Gesture.DOWN: "answer", Gesture.UP: "hangup"},
    PhoneState.ON_HOLD: {Gesture.SINGLE: "hangup", Gesture.LONG: "hold_toggle", Gesture.UP: "hangup"},
    PhoneState.TRANSFERRING: {},
}

_IN_A_CALL = (PhoneState.IN_CALL, PhoneState.WAITING, PhoneState.ON_HOLD, PhoneState.TRANSFERRING)


def _every_state(action: str) -> Mapping:
    return {s: {Gesture.SINGLE: action, Gesture.LONG: action} for s in PhoneState}


_KEYPAD = [*((str(n), str(n)) for n in range(10)), ("star", "*"), ("pound", "#")]


def _only(**states: str) -> Mapping:
    """A single press does ``states[state]`` in the states named, nothing elsewhere."""
    return {s: ({Gesture.SINGLE: states[s.value]} if s.value in states else {}) for s in PhoneState}


#: Controls whose name says what they are do that, not what the main button does. A Bluetooth headset's
#: call commands (source ``hfp``) are such controls: ``answer`` (ATA), ``hangup`` (AT+CHUP), ``redial``
#: (AT+BLDN), ``voice_dial`` (AT+BVRA, nothing by default: map it, e.g. to ``transfer:agents`` in a call);
#: HSP's one button ``hsp_button`` does what the main button does.
CONTROL_DEFAULTS: dict[str, Mapping] = {
    "mute": {s: ({Gesture.SINGLE: "mute_call_toggle"} if s in _IN_A_CALL else {}) for s in PhoneState},
    "volume_up": _every_state("volume_up"),
    "volume_down": _every_state("volume_down"),
    "answer": _only(ringing="answer", waiting="answer"),
    "hangup": _only(ringing="reject", waiting="hangup", in_call="hangup", on_hold="hangup"),
    "redial": _only(idle="redial"),
    "flash": _only(in_call="hold_toggle", on_hold="hold_toggle", waiting="answer"),  # a USB headset's Flash: swaps
    "voice_dial": _only(),
    # A USB headset's keypad (HID telephony keys) sends its digits in a call.
    **{f"key_{key}": _only(in_call=f"dtmf:{digit}") for key, digit in _KEYPAD},
}


class ButtonsPlugin:
    def __init__(self) -> None:
        self.default: Mapping = _copy(DEFAULTS)
        self.named: dict[str, Mapping] = {n: _copy(m) for n, m in CONTROL_DEFAULTS.items()}
        self.controls: dict[str, Mapping] = {}

    @hookimpl(trylast=True)  # after the input plugins declared their controls
    def softphone_configure(self, config: Config) -> None:
        file = str(config.path)
        section = config.section("buttons")
        known = {"default", "controls"}
        for key in section:
            if key not in known:
                raise ConfigError(file, f"buttons.{key}", "unknown key (expected default or controls)")
        actions = getattr(config, "known_actions", None)
        if actions is not None:  # leave out the defaults no loaded plugin can carry out
            for mapping in (self.default, *self.named.values()):
                for table in mapping.values():
                    for gesture, action in list(table.items()):
                        if action.partition(":")[0] not in actions:
                            del table[gesture]
        for state, table in _parse(config, section.get("default", {}), "buttons.default", actions).items():
            self.default[state].update(table)
        controls = section.get("controls", {})
        if not isinstance(controls, dict):
            raise ConfigError(file, "buttons.controls", "expected a table of controls")
        declared = config.controls
        for name, value in controls.items():
            if name not in declared:
                have = ", ".join(f"{n} ({'/'.join(sorted(declared[n]))})" for n in sorted(declared)) or "none"
                raise ConfigError(
                    file, f"buttons.controls.{name}", f"no input plugin reads a control of this name (controls: {have})"
                )
            self.controls[name] = _parse(config, value, f"buttons.controls.{name}", actions)

    def lookup(self, button: str, state: PhoneState, gesture: Gesture) -> str | None:
        for mapping in (self.controls.get(button), self.named.get(button, self.default)):
            if mapping and gesture in mapping.get(state, {}):
                action = mapping[state][gesture]
                return action or None  # "" switches a default off
        return None

    @hookimpl
    def softphone_map_input(self, event: ButtonEvent, state: PhoneState) -> str | None:
        return self.lookup(event.button, state, event.gesture)

    @hookimpl
    def softphone_wants_double(self, source: str, button: str, state: PhoneState) -> bool | None:
        return self.lookup(button, state, Gesture.DOUBLE) is not None or None


def _copy(mapping: Mapping) -> Mapping:
    return {s: dict(mapping.get(s, {})) for s in PhoneState}


def _parse(config: Config, table: Any, key: str, actions: set[str] | None) -> Mapping:
    file = str(config.path)
    if not isinstance(table, dict):
        raise ConfigError(file, key, "expected a table of phone states")
    result: Mapping = {}
    for state_name, gestures in table.items():
        try:
            state = PhoneState(state_name)
        except ValueError:
            raise ConfigError(file, f"{key}.{state_name}", f"unknown phone state (one of {', '.join(PhoneState)})") from None
        if not isinstance(gestures, dict):
            raise ConfigError(file, f"{key}.{state_name}", "expected a table of gesture = action")
        result[state] = {}
        for gesture_name, action in gestures.items():
            where = f"{key}.{state_name}.{gesture_name}"
            try:
                gesture = Gesture(gesture_name)
            except ValueError:
                raise ConfigError(file, where, f"unknown gesture (one of {', '.join(Gesture)})") from None
            if not isinstance(action, str):
                raise ConfigError(file, where, "expected an action name (a string)")
            if action and actions is not None and action.partition(":")[0] not in actions:
                raise ConfigError(file, where, f"unknown action {action!r} (known: {', '.join(sorted(actions))})")
            result[state][gesture] = action
    return result
