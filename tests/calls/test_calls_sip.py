"""Do not disturb, speed dial and redial on the wire: the phone process against Kamailio and real callers."""

from __future__ import annotations


def test_dnd_refuses_with_the_configured_code_and_the_phone_never_rings(phone_factory, baresip_factory, kamailio, tmp_path):
    phone = phone_factory(extra=f'[dnd]\ncode = 603\nstate_file = "{tmp_path / "dnd.json"}"\n').start()
    assert phone.cli("action", "dnd").returncode == 0
    caller = baresip_factory("1001")
    caller.dial(kamailio.uri("1000"))
    refusal = kamailio.wait_for(
        lambda m: m.source == phone.source and m.method == "INVITE" and m.kind == "reply" and m.status >= 300
    )
    assert refusal.status == 603
    caller.wait_event("CALL_CLOSED")
    phone.wait_event(lambda e: e["event"] == "call_refused" and e["code"] == 603)
    assert not [e for e in phone.events if e["event"] == "state" and e["state"] == "ringing"]
    assert not [m for m in kamailio.ladder() if m.source == phone.source and m.status == 180]


def test_speed_dial_and_redial_call_the_number(phone_factory, sipp_target_factory, kamailio):
    phone = phone_factory(extra='[speed_dial]\nreception = "1003"\n').start()
    sipp_target_factory("1003", "answer")
    for action in ("call:reception", "redial"):
        phone.cli("action", action)
        phone.wait_state("in_call")
        phone.cli("action", "hangup")
        phone.wait_state("idle")
    invites = [m for m in kamailio.ladder() if m.source == phone.source and m.method == "INVITE" and m.is_request]
    assert [m.ruri.split("@")[0] for m in invites] == ["sip:1003", "sip:1003"]
