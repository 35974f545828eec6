"""Call forwarding: always and busy redirect before anything rings, no answer after the ring time."""

from __future__ import annotations

import json

import pytest

from firmware_app import app
from firmware_app.errors import CommandError, ConfigError
from firmware_app.model import PhoneState
from firmware_app.testing import settle
from tests.inputs.conftest import write_config

PLUGINS = ["softphone_forwarding"]


def forwarding(tmp_path, body: str) -> str:
    return f'[forwarding]\nstate_file = "{tmp_path / "fwd.json"}"\n{body}'


def rejects(rig) -> list[tuple]:
    return [c[1:] for c in rig.engine.commands if c[0] == "reject"]


async def test_always_redirects_every_call_before_it_rings(phone_rig, tmp_path):
    async with phone_rig(PLUGINS, forwarding(tmp_path, 'always = "1003"\n')) as rig:
        call_id = rig.engine.incoming("sip:1001@127.0.0.1")
        await settle()
        assert rejects(rig) == [(call_id, 302, "sip:1003@127.0.0.1:5060")]
        assert rig.phone.state is PhoneState.IDLE and not rig.engine.sent("ring")
        [refused] = [e for e in rig.events if e["event"] == "call_refused"]
        assert refused["reason"] == "forwarded (always)" and refused["contact"] == "sip:1003@127.0.0.1:5060"


async def test_busy_redirects_only_while_in_a_call(phone_rig, tmp_path):
    async with phone_rig(PLUGINS, forwarding(tmp_path, 'busy = "sip:voicemail@pbx.example.com"\n')) as rig:
        await rig.set_state(PhoneState.RINGING)  # not busy: it rings
        assert not rejects(rig)
        await rig.set_state(PhoneState.IN_CALL)
        second = rig.engine.incoming("sip:1002@127.0.0.1")
        await settle()
        assert rejects(rig) == [(second, 302, "sip:voicemail@pbx.example.com")]
        assert rig.phone.state is PhoneState.IN_CALL


async def test_no_answer_redirects_a_call_left_ringing(phone_rig, tmp_path):
    async with phone_rig(PLUGINS, forwarding(tmp_path, 'no_answer = "1003"\nno_answer_s = 1\n')) as rig:
        call_id = rig.engine.incoming("sip:1001@127.0.0.1")
        await rig.wait(lambda: rejects(rig), timeout=5, what="the redirect after 1 s")
        assert rejects(rig) == [(call_id, 302, "sip:1003@127.0.0.1:5060")]
        # A call answered in time stays.
        await rig.set_state(PhoneState.RINGING)
        rig.phone.answer()
        await settle()
        forwarded = [e for e in rig.events if e["event"] == "call_forwarded"]
        assert len(forwarded) == 1


async def test_the_action_turns_it_off_and_on_and_it_is_kept(phone_rig, tmp_path):
    body = forwarding(tmp_path, 'always = "1003"\n')
    async with phone_rig(PLUGINS, body) as rig:
        assert (await rig.phone.run_action("forwarding"))["on"] is False
        await rig.set_state(PhoneState.RINGING)  # rings now
        assert not rejects(rig)
    assert json.loads((tmp_path / "fwd.json").read_text()) == {"on": False}
    async with phone_rig(PLUGINS, body) as rig:
        assert rig.phone.status()["forwarding"]["on"] is False
        assert (await rig.phone.run_action("forwarding:on"))["always"] == "sip:1003@127.0.0.1:5060"
        with pytest.raises(CommandError, match="on, off or toggle"):
            await rig.phone.run_action("forwarding:sometimes")


async def test_without_targets_the_action_says_so(phone_rig, tmp_path):
    async with phone_rig(PLUGINS, "") as rig:
        with pytest.raises(CommandError, match="no forwarding target"):
            await rig.phone.run_action("forwarding")


def test_forwarding_to_this_phone_is_a_configuration_error(tmp_path):
    path = write_config(tmp_path, PLUGINS, '[forwarding]\nbusy = "1000"\n')
    with pytest.raises(ConfigError) as e:
        app.prepare(str(path), secrets=False, strict=True)
    assert "forwarding.busy" in str(e.value) and "is this phone" in str(e.value)


def test_forwarding_on_the_wire(phone_factory, baresip_factory, kamailio, tmp_path):
    phone = phone_factory(extra=forwarding(tmp_path, 'always = "1003"\n')).start()
    caller = baresip_factory("1001")
    caller.dial(kamailio.uri("1000"))
    moved = kamailio.wait_for(lambda m: m.source == phone.source and m.method == "INVITE" and m.kind == "reply" and m.status >= 300)
    assert moved.status == 302
    assert moved.contact is not None and "sip:1003@" in moved.contact
    phone.wait_event(lambda e: e["event"] == "call_refused" and e["code"] == 302)
