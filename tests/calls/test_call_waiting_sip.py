"""Call waiting with two real callers (baresip) through Kamailio: the second rings, answer holds the first,
swap changes calls, a conference resumes both, hanging up goes back to the held call."""

from __future__ import annotations

from tests.phone_process import wait


def reinvites(kamailio, phone, call_id: str) -> list:
    """The phone's re-INVITEs (hold, resume) within one call, at the proxy."""
    return [m for m in kamailio.ladder() if m.source == phone.source and m.method == "INVITE" and m.is_request
            and m.call_id == call_id]


def calls(phone) -> dict[str, str]:
    return {c["remote_uri"].split("@")[0].removeprefix("sip:"): c["state"] for c in phone.status()["calls"]}


def test_call_waiting_answer_swap_conference_and_back(phone_factory, baresip_factory, kamailio):
    phone = phone_factory().start()
    first, second = baresip_factory("1001"), baresip_factory("1002")
    first.dial(kamailio.uri("1000"))
    phone.wait_state("ringing")
    phone.cli("action", "answer")
    first.wait_event("CALL_ESTABLISHED")
    phone.wait_state("in_call")

    second.dial(kamailio.uri("1000"))  # rings as a waiting call: 180, not 486
    phone.wait_state("waiting")
    ringing = kamailio.wait_for(lambda m: m.source == phone.source and m.method == "INVITE" and m.status == 180
                                and m.from_user == "1002")
    assert not [m for m in kamailio.ladder() if m.source == phone.source and m.status == 486]
    ids = {c["remote_uri"].split("@")[0].removeprefix("sip:"): c["sip_call_id"] for c in phone.status()["calls"]}
    assert ringing.call_id == ids["1002"]

    phone.cli("action", "answer")  # holds 1001, answers 1002
    second.wait_event("CALL_ESTABLISHED")
    wait(lambda: calls(phone) == {"1001": "held", "1002": "active"}, 10, "1001 held, 1002 up", phone)
    assert len(reinvites(kamailio, phone, ids["1001"])) == 1  # the hold (the call's INVITE came from 1001)

    phone.cli("action", "swap")
    wait(lambda: calls(phone) == {"1001": "active", "1002": "held"}, 10, "swapped", phone)

    phone.cli("action", "conference")  # 1002 resumed; the bridge joins the two
    wait(lambda: calls(phone) == {"1001": "active", "1002": "active"}, 10, "both up in a conference", phone)
    phone.wait_event(lambda e: e["event"] == "conference")

    phone.cli("action", "hangup")  # ends one of them; the other stays up
    wait(lambda: len(phone.status()["calls"]) == 1, 10, "one call left", phone)
    assert list(calls(phone).values()) == ["active"]
