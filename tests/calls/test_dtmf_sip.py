"""DTMF on the wire: the phone's digits reach baresip (RFC 4733), baresip's reach the phone."""

from __future__ import annotations


def test_dtmf_both_ways_with_baresip(phone_factory, baresip_factory, kamailio):
    phone = phone_factory().start()
    caller = baresip_factory("1001")
    caller.dial(kamailio.uri("1000"))
    phone.wait_state("ringing")
    phone.cli("action", "answer")
    caller.wait_event("CALL_ESTABLISHED")
    phone.wait_state("in_call")

    result = phone.cli("action", "dtmf:19#")
    assert "rfc4733" in result.stdout
    heard = [caller.wait_event("CALL_DTMF_START", timeout=5).get("param") for _ in range(3)]
    assert heard == ["1", "9", "#"]

    caller.command("sndcode", "5")
    received = phone.wait_event(lambda e: e["event"] == "dtmf" and e.get("direction") == "received")
    assert received["digit"] == "5" and received["method"] == "rfc4733"
