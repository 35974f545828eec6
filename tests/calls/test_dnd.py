"""Do not disturb: refused before anything rings, with the configured code, kept across restarts, shown."""

from __future__ import annotations

import json

import pytest

from firmware_app import app
from firmware_app.errors import CommandError, ConfigError
from firmware_app.model import PhoneState
from firmware_app.testing import settle
from tests.inputs.conftest import write_config


def dnd_config(tmp_path, extra: str = "") -> str:
    return f'[dnd]\nstate_file = "{tmp_path / "dnd.json"}"\n{extra}'


async def test_a_call_during_dnd_is_refused_before_it_rings(phone_rig, tmp_path):
    async with phone_rig(["softphone_audio"], dnd_config(tmp_path, "code = 480\n")) as rig:
        assert await rig.phone.run_action("dnd") == {"on": True, "code": 480}
        rig.engine.incoming("sip:1001@127.0.0.1")
        await settle()
        assert rig.phone.state is PhoneState.IDLE and rig.phone.calls() == []
        assert [c[2] for c in rig.engine.commands if c[0] == "reject"] == [480]
        assert not rig.engine.sent("ring")
        assert not [e for e in rig.events if e["event"] == "call"]  # no plugin heard of it: nothing rang
        [refused] = [e for e in rig.events if e["event"] == "call_refused"]
        assert (refused["code"], refused["reason"]) == (480, "do not disturb")
        assert rig.phone.status()["dnd"] == {"on": True, "code": 480}

        assert await rig.phone.run_action("dnd:off") == {"on": False, "code": 480}
        await rig.set_state(PhoneState.RINGING)  # rings again
        assert [e["on"] for e in rig.events if e["event"] == "dnd"] == [False, True, False]


async def test_dnd_leaves_the_call_in_progress_alone(phone_rig, tmp_path):
    async with phone_rig([], dnd_config(tmp_path)) as rig:
        await rig.set_state(PhoneState.IN_CALL)
        await rig.phone.run_action("dnd:on")
        assert rig.phone.state is PhoneState.IN_CALL
        rig.engine.incoming("sip:1002@127.0.0.1")  # a second caller: refused with DND's code, not call waiting
        await settle()
        assert rig.engine.sent("reject")[-1][1] == 486
        assert not [e for e in rig.events if e["event"] == "call_waiting"]


async def test_dnd_is_kept_across_a_restart_unless_told_not_to(phone_rig, tmp_path):
    async with phone_rig([], dnd_config(tmp_path)) as rig:
        await rig.phone.run_action("dnd:on")
    saved = tmp_path / "dnd.json"
    assert json.loads(saved.read_text()) == {"on": True}
    async with phone_rig([], dnd_config(tmp_path)) as rig:
        assert rig.phone.status()["dnd"]["on"] is True
        rig.engine.incoming("sip:1001@127.0.0.1")
        await settle()
        assert rig.engine.sent("reject")[-1][1] == 486
    async with phone_rig([], dnd_config(tmp_path, "remember = false\n")) as rig:
        assert rig.phone.status()["dnd"]["on"] is False


async def test_a_bad_dnd_argument_is_a_clear_error(phone_rig, tmp_path):
    async with phone_rig([], dnd_config(tmp_path)) as rig:
        with pytest.raises(CommandError, match="dnd takes on, off or toggle"):
            await rig.phone.run_action("dnd:maybe")


def test_an_unsupported_code_names_the_key(tmp_path):
    path = write_config(tmp_path, ["softphone_calls"], "[dnd]\ncode = 404\n")
    with pytest.raises(ConfigError) as e:
        app.prepare(str(path), secrets=False, strict=True)
    assert "dnd.code" in str(e.value) and str(path) in str(e.value)
