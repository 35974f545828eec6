"""Intercom and auto-answer: allowed callers and the standard headers open the line without a press."""

from __future__ import annotations

import subprocess

from firmware_app.model import CallState, PhoneState
from firmware_app.testing import settle
from tests.peers.support import LOOPBACK, free_port, require_binary
from tests.peers.sipp import SCENARIOS

PLUGINS = ["softphone_intercom"]


async def test_an_intercom_caller_is_answered_at_once_with_a_beep(phone_rig):
    async with phone_rig(PLUGINS, '[intercom]\ncallers = ["1009"]\n') as rig:
        call_id = rig.engine.incoming("sip:1009@127.0.0.1:5060")
        await settle()
        assert rig.engine.sent("answer") == [(call_id,)]
        assert not rig.engine.sent("ring")
        assert [c[0].rsplit("/", 1)[-1] for c in rig.engine.sent("play_sound")] == ["intercom.wav"]
        other = [e for e in rig.events if e["event"] == "auto_answer"]
        assert other[0]["reason"] == "an intercom caller"


async def test_the_headers_ask_for_auto_answer(phone_rig):
    async with phone_rig(PLUGINS, "[intercom]\nbeep = false\n") as rig:
        first = rig.engine.incoming("sip:1001@127.0.0.1", call_info="<sip:pbx>;answer-after=0")
        await settle()
        assert rig.engine.sent("answer") == [(first,)] and not rig.engine.sent("play_sound")
        rig.phone.hangup(first)
        await settle()
        second = rig.engine.incoming("sip:1002@127.0.0.1", alert_info="<http://x/y>;info=alert-autoanswer")
        await settle()
        assert rig.engine.sent("answer")[-1] == (second,)
        rig.phone.hangup(second)
        await settle()
        third = rig.engine.incoming("sip:1003@127.0.0.1", call_info="<sip:pbx>;answer-after=1")
        await settle()
        assert rig.engine.sent("ring")[-1] == (third,)  # rings first ...
        await rig.wait(lambda: rig.engine.sent("answer")[-1] == (third,), what="the answer after 1 s")  # ... then


async def test_a_plain_call_rings_and_headers_can_be_ignored(phone_rig):
    async with phone_rig(PLUGINS, "[intercom]\nheaders = false\n") as rig:
        rig.engine.incoming("sip:1001@127.0.0.1", call_info="<sip:pbx>;answer-after=0")
        await settle()
        assert rig.phone.state is PhoneState.RINGING and not rig.engine.sent("answer")


async def test_never_while_in_another_call_unless_configured(phone_rig):
    async with phone_rig(PLUGINS, '[intercom]\ncallers = ["1009"]\n') as rig:
        await rig.set_state(PhoneState.IN_CALL)
        waiting = rig.engine.incoming("sip:1009@127.0.0.1")
        await settle()
        assert not rig.engine.sent("answer")
        assert rig.phone.get_call(waiting).state is CallState.RINGING
    async with phone_rig(PLUGINS, '[intercom]\ncallers = ["1009"]\nwhile_busy = true\n') as rig:
        await rig.set_state(PhoneState.IN_CALL)
        waiting = rig.engine.incoming("sip:1009@127.0.0.1")
        await settle()
        assert rig.engine.sent("answer") == [(waiting,)]


def run_sipp_autoanswer(target: str, workdir, *, source_ip: str = LOOPBACK) -> subprocess.CompletedProcess[str]:
    workdir.mkdir()
    return subprocess.run(
        [require_binary("sipp"), target, "-sf", str(SCENARIOS / "uac_autoanswer.xml"), "-s", "1000",
         "-set", "caller", "1007", "-i", source_ip, "-p", str(free_port(tcp=False)), "-mi", source_ip,
         "-mp", str(free_port(tcp=False)), "-t", "u1", "-m", "1", "-nostdin", "-timeout", "15s", "-timeout_error",
         "-trace_err", "-error_file", str(workdir / "errors.log")],
        cwd=workdir, capture_output=True, text=True, timeout=30,
    )


def test_an_auto_answer_invite_through_the_registrar_is_answered(phone_factory, kamailio, tmp_path):
    phone = phone_factory().start()
    done = run_sipp_autoanswer(f"{kamailio.host}:{kamailio.port}", tmp_path / "sipp")
    errors = tmp_path / "sipp" / "errors.log"
    assert done.returncode == 0, errors.read_text() if errors.exists() else done.stderr
    ok = kamailio.wait_for(lambda m: m.source == phone.source and m.method == "INVITE" and m.status == 200)
    assert ok.kind == "reply"
    phone.wait_event(lambda e: e["event"] == "auto_answer")
    phone.wait_state("idle")


def test_an_auto_answer_invite_from_an_untrusted_source_is_not(phone_factory, kamailio, tmp_path):
    phone = phone_factory().start()
    port = phone.source.rsplit(":", 1)[1]  # straight to the phone, not through the registrar
    done = run_sipp_autoanswer(f"127.0.0.1:{port}", tmp_path / "sipp", source_ip="127.0.0.3")
    assert done.returncode != 0  # refused: no 200 came
    assert "403" in (tmp_path / "sipp" / "errors.log").read_text(errors="replace")
    assert not [e for e in phone.events if e["event"] == "auto_answer"]
    assert phone.status()["state"] == "idle"
