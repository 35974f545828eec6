"""Speed dial (``call:NAME``) and ``redial``, as a button or the CLI runs them."""

from __future__ import annotations

import pytest

from firmware_app import app
from firmware_app.errors import CommandError, ConfigError
from firmware_app.model import PhoneState
from firmware_app.testing import settle
from tests.inputs.conftest import write_config

async def hang_up(rig) -> None:
    await settle()
    rig.phone.hangup()
    await settle()
    assert rig.phone.state is PhoneState.IDLE


SPEED_DIAL = '[speed_dial]\nreception = "1003"\nsupport = "sip:support@pbx.example.com"\n'


async def test_a_speed_dial_name_calls_its_number(phone_rig):
    async with phone_rig([], SPEED_DIAL) as rig:
        await rig.phone.run_action("call:reception")
        assert rig.engine.sent("make_call")[-1][0] == "sip:1003@127.0.0.1:5060"
        await hang_up(rig)
        await rig.phone.run_action("call:support")
        assert rig.engine.sent("make_call")[-1][0] == "sip:support@pbx.example.com"
        await hang_up(rig)
        await rig.phone.run_action("call:1004")  # not a name: a number, as before
        assert rig.engine.sent("make_call")[-1][0] == "sip:1004@127.0.0.1:5060"


async def test_redial_calls_the_last_number_called_however_it_was_dialled(phone_rig):
    async with phone_rig([]) as rig:
        with pytest.raises(CommandError, match="nothing to redial"):
            await rig.phone.run_action("redial")
        rig.phone.dial("1005")  # e.g. a Bluetooth headset's ATD, or the CLI
        await hang_up(rig)
        await rig.phone.run_action("redial")
        assert [c[0] for c in rig.engine.sent("make_call")] == ["sip:1005@127.0.0.1:5060"] * 2


async def test_an_incoming_call_is_not_what_redial_calls(phone_rig):
    async with phone_rig([]) as rig:
        rig.phone.dial("1006")
        await hang_up(rig)
        await rig.set_state(PhoneState.RINGING)  # 1001 calls in
        await rig.set_state(PhoneState.IDLE)
        await rig.phone.run_action("redial")
        assert rig.engine.sent("make_call")[-1][0] == "sip:1006@127.0.0.1:5060"


@pytest.mark.parametrize(
    ("table", "key", "expected"),
    [
        ('[speed_dial]\n"front desk" = "1003"\n', "speed_dial.front desk", "a name of letters"),
        ('[speed_dial]\nreception = ""\n', "speed_dial.reception", "a number or a SIP URI"),
        ("[speed_dial]\nreception = 1003\n", "speed_dial.reception", "a number or a SIP URI"),
    ],
)
def test_speed_dial_mistakes_name_the_key(tmp_path, table, key, expected):
    path = write_config(tmp_path, ["softphone_calls"], table)
    with pytest.raises(ConfigError) as e:
        app.prepare(str(path), secrets=False, strict=True)
    assert key in str(e.value) and expected in str(e.value) and str(path) in str(e.value)
