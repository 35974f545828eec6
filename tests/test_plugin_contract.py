"""The plugin contract: every hook documented and typed, failures isolated by plugin name."""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path

import pluggy
import pytest

from firmware_app import hookimpl, hookspecs
from firmware_app.model import ButtonEvent, Call, CallState, Direction, Gesture, IncomingAction, PhoneState
from firmware_app.plugins import PluginHost
from tests.plugins import raising

HOOKS = [name for name in dir(hookspecs) if name.startswith("softphone_")]


def test_hooks_follow_one_naming_scheme():
    assert len(HOOKS) >= 10
    assert all(callable(getattr(hookspecs, name)) for name in HOOKS)


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_documented_and_typed(name):
    fn = getattr(hookspecs, name)
    doc = inspect.getdoc(fn) or ""
    assert len(doc.split()) >= 8, f"{name} needs a docstring saying when it fires and what to return"
    sig = inspect.signature(fn)
    assert sig.return_annotation is not inspect.Signature.empty
    assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values())


def test_plugins_import_the_marker_from_the_app_not_pluggy():
    import softphone_ble
    import softphone_buttons
    import softphone_calls
    import softphone_forwarding
    import softphone_gpio
    import softphone_headset_keys
    import softphone_hfp
    import softphone_history
    import softphone_intercom
    import softphone_transfer
    import softphone_usb_headset

    for module in (softphone_calls, softphone_buttons, softphone_transfer, softphone_gpio, softphone_ble,
                   softphone_headset_keys, softphone_hfp, softphone_usb_headset, softphone_forwarding,
                   softphone_history, softphone_intercom):
        source = inspect.getsource(module)
        assert "import pluggy" not in source
        assert re.search(r"^from firmware_app import (.*, )?hookimpl\b", source, re.M), module.__name__


def test_builtins_load_through_the_entry_point_group():
    host = PluginHost(strict=True)
    host.load_entry_points()
    assert host.names()[:3] == ["softphone_calls", "softphone_buttons", "softphone_transfer"]


def test_disable_by_name():
    host = PluginHost(strict=True)
    host.load_entry_points(disable=["softphone_transfer"])
    assert "softphone_transfer" not in host.names()


def test_misspelt_hook_fails_loudly():
    class Typo:
        @hookimpl
        def softphone_incomming_call(self, call):
            return None

    host = PluginHost()
    with pytest.raises(pluggy.PluginValidationError):
        host.register(Typo(), "typo")


CALL = Call(1, Direction.INCOMING, CallState.RINGING, "sip:1001@pbx")


class Answering:
    @hookimpl
    def softphone_incoming_call(self, call):
        return IncomingAction.ANSWER

    @hookimpl
    def softphone_map_input(self, event, state):
        return "answer"


def test_a_raising_plugin_is_logged_by_name_and_the_others_still_run(caplog):
    host = PluginHost()
    host.register(Answering(), "answering")
    host.register(raising, "raising")  # registered last: asked first
    with caplog.at_level(logging.ERROR):
        decision = host.incoming_call(CALL)
        action = host.map_input(ButtonEvent("gpio", "main", Gesture.SINGLE), PhoneState.RINGING)
        host.call_state_changed(CALL, None)
    assert decision is IncomingAction.ANSWER
    assert action == "answer"
    failures = [r for r in caplog.records if "plugin raising failed" in r.getMessage()]
    assert {r.getMessage().split(" in ")[1].split(";")[0] for r in failures} == {
        "softphone_incoming_call",
        "softphone_map_input",
        "softphone_call_state_changed",
    }
    assert all(r.exc_info and r.exc_info[0] is raising.PluginBroke for r in failures)


def test_strict_mode_raises_for_tests():
    host = PluginHost(strict=True)
    host.register(raising, "raising")
    with pytest.raises(raising.PluginBroke):
        host.incoming_call(CALL)


def test_a_plugin_answering_nonsense_does_not_decide(caplog):
    class Nonsense:
        @hookimpl
        def softphone_incoming_call(self, call):
            return "maybe"

    host = PluginHost()
    host.register(Nonsense(), "nonsense")
    assert host.incoming_call(CALL) is None
    assert "ringing instead" in caplog.text


def test_plugins_hold_the_phone_through_the_contract_only():
    """No plugin imports the phone's or the engine's own modules: the contract is hookspecs.py and Phone."""
    root = Path(__file__).resolve().parent.parent
    offenders = [
        f"{p.relative_to(root)}:{n}"
        for p in sorted((root / "plugins").rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\bfirmware_app(\.| import .*\b)(phone|engine)\b", line)
    ]
    assert offenders == []
