"""Blind transfers with Linphone (linphone-daemon 5.1, Debian 12's linphone-cli) as the far party.

Kamailio proxies, sipp is the target: 1003 answers, 1004 is busy. The ladder is asserted as Kamailio saw it.
Linphone has habits of its own, and the tests rely only on what the protocol promises:
- its sipfrags read "SIP/2.0 200 Ok": the status code counts, not the reason phrase;
- its final NOTIFY carries "Subscription-State: terminated;reason=reason=noresource" (the parameter name
  doubled), which the phone must still take as the end of the transfer;
- it pauses the call itself before calling the target, resumes it itself when the target fails, and ends
  the call itself once a transfer it asked for has succeeded;
- it answers 491 to a request that crosses one of its own in the dialog: a re-INVITE, but also a REFER
  or a NOTIFY.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import pytest

from tests.peers.fixtures import LinphoneFactory, SippTargetFactory
from tests.peers.kamailio import Kamailio, SipMessage
from tests.peers.linphone import Linphone
from tests.peers.support import wait_until
from tests.phone_process import PhoneProcess
from tests.test_transfer_sip import TRANSFER_CONFIG, Step, in_order

# These first lines continue the [logging] table PhoneProcess writes last: at level 2 PJSIP logs each request
# it drops as malformed ("Dropping N bytes packet from ..."), which is what a failure here has to show.
PHONE_CONFIG = "pjsip_level = 2\n" + TRANSFER_CONFIG

# Linphone may answer a re-INVITE that crosses its own with 491; the phone tries again within about 4 s.
REINVITE_SETTLES = 8.0


class CallUp(NamedTuple):
    phone: PhoneProcess
    linphone: Linphone
    call: int  # Linphone's number for the call
    call_id: str  # its SIP Call-ID


@pytest.fixture
def linphone_call(phone_factory, linphone_factory: LinphoneFactory, kamailio: Kamailio) -> CallUp:
    """Linphone 1002 calls the phone (1000), which answers."""
    phone = phone_factory(extra=PHONE_CONFIG).start()
    caller = linphone_factory("1002")
    call = caller.call(kamailio.uri("1000"))
    phone.wait_state("ringing")
    phone.cli("answer")
    caller.wait_event("LinphoneCallStreamsRunning", call_id=call)
    phone.wait_state("in_call")
    return CallUp(phone, caller, call, phone.status()["calls"][0]["sip_call_id"])


# -- steps of a ladder ------------------------------------------------------------------------------------


def request(call_id: str, method: str, source: str) -> Step:
    return lambda m: m.call_id == call_id and m.is_request and m.method == method and m.source == source


def reply(call_id: str, method: str, status: int, source: str | None = None) -> Step:
    return lambda m: (m.call_id == call_id and not m.is_request and m.method == method and m.status == status
                      and (source is None or m.source == source))


def notify(call_id: str, code: int, source: str) -> Step:
    """A NOTIFY whose sipfrag reports `code` (whatever the reason phrase)."""
    return lambda m: request(call_id, "NOTIFY", source)(m) and (m.body_first_line or "").startswith(f"SIP/2.0 {code} ")


def wait_in_order(kamailio: Kamailio, steps: list[tuple[str, Step]], timeout: float = 5.0) -> list[SipMessage]:
    """in_order() on the proxy's ladder, polled until the last step has arrived too."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return in_order(kamailio.ladder(), steps)
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.05)


def answered(ladder: list[SipMessage], notify_: SipMessage, source: str) -> bool:
    """Whether `source` answered this NOTIFY with 200 (matched by CSeq: NOTIFYs are independent transactions)."""
    return any(reply(notify_.call_id, "NOTIFY", 200, source)(m) and m.cseq == notify_.cseq for m in ladder)


def why_not(phone: PhoneProcess, kamailio: Kamailio, call_id: str) -> str:
    """For a failed transfer's message: how the transferee answered each REFER, and the requests the phone
    dropped as malformed (PJSIP's own log lines)."""
    answers = [m.status for m in kamailio.ladder() if m.call_id == call_id and m.method == "REFER"
               and not m.is_request]
    dropped = [line for line in phone.log().splitlines() if "Dropping" in line]
    return f"REFER answered {answers}; requests the phone dropped:\n" + ("\n".join(dropped) or "(none)")


# -- Linphone as the transferee ---------------------------------------------------------------------------


def test_seed_ladder_with_linphone_as_the_transferee(linphone_call: CallUp, sipp_target_factory: SippTargetFactory,
                                                     kamailio: Kamailio) -> None:
    phone, linphone, call, call_id = linphone_call
    target = sipp_target_factory("1003", "answer")

    result = phone.cli("transfer", "desk", check=False)

    assert result.returncode == 0, f"{result.stderr}\n{why_not(phone, kamailio, call_id)}"
    assert '"code": 200' in result.stdout
    p, far = phone.source, linphone.source
    _, _, refer, accepted, final, _, _ = wait_in_order(kamailio, [
        ("hold re-INVITE", request(call_id, "INVITE", p)),
        ("its 200", reply(call_id, "INVITE", 200, far)),
        ("REFER", request(call_id, "REFER", p)),
        ("202 Accepted", reply(call_id, "REFER", 202, far)),
        ("NOTIFY sipfrag 200", notify(call_id, 200, far)),
        ("BYE", request(call_id, "BYE", p)),
        ("200 to BYE", reply(call_id, "BYE", 200, far)),
    ])
    assert refer.refer_to.startswith("<sip:1003@") and refer.refer_to.endswith(">"), refer.refer_to
    assert refer.referred_by.startswith("<sip:1000@"), refer.referred_by
    assert final.subscription_state.startswith("terminated"), final.subscription_state
    ladder = kamailio.ladder()
    trying = next((m for m in ladder if notify(call_id, 100, far)(m)), None)
    assert trying is not None and trying.cseq < final.cseq, "no NOTIFY sipfrag 100 before the final one"
    assert answered(ladder, trying, p) and answered(ladder, final, p)
    # The final NOTIFY reports the transferee's call to the target, so that INVITE went out before it.
    between = ladder[ladder.index(accepted) : ladder.index(final)]
    assert [m for m in between if m.is_request and m.method == "INVITE" and m.source == far
            and (m.ruri or "").startswith("sip:1003@")], "Linphone never called the target"
    assert target.calls_received == 1

    phone.wait_state("idle")
    phone.wait_event(lambda e: e["event"] == "transfer" and e["state"] == "succeeded")
    states = [e["state"] for e in phone.events if e["event"] == "transfer"]
    assert states[0] == "started" and "failed" not in states
    # Linphone's own view: the call with the phone is over, its call to the target is up.
    linphone.wait_event("LinphoneCallReleased", call_id=call)
    linphone.wait_event("LinphoneCallStreamsRunning", where=lambda e: e.call_id != call)


def test_busy_target_leaves_linphone_off_hold_and_in_the_call(linphone_call: CallUp,
                                                              sipp_target_factory: SippTargetFactory,
                                                              kamailio: Kamailio) -> None:
    phone, linphone, call, call_id = linphone_call
    sipp_target_factory("1004", "busy")

    result = phone.cli("transfer", "busy", check=False)

    assert result.returncode == 1
    assert "transfer to busy failed: 486" in result.stderr and "back on the line" in result.stderr
    p, far = phone.source, linphone.source
    wait_in_order(kamailio, [
        ("REFER", request(call_id, "REFER", p)),
        ("NOTIFY sipfrag 486", notify(call_id, 486, far)),
        ("unhold re-INVITE", request(call_id, "INVITE", p)),
        ("its 200", reply(call_id, "INVITE", 200, far)),
    ], timeout=REINVITE_SETTLES)
    failed = phone.wait_event(lambda e: e["event"] == "transfer" and e["state"] == "failed")
    assert failed["code"] == 486
    phone.wait_state("in_call")
    [still] = phone.status()["calls"]
    assert still["state"] == "active" and still["sip_call_id"] == call_id
    # Linphone's own view: its call to 1004 failed, and the call with the phone is up and no longer held by
    # the phone. Linphone paused the call itself for the transfer and resumes it itself; when that resume
    # crosses the phone's unhold, both get 491 and Linphone 5.1 does not try again: it stays "Paused".
    linphone.wait_event("LinphoneCallError", where=lambda e: e.call_id != call)
    wait_until(lambda: linphone.call_state(call) in ("LinphoneCallStreamsRunning", "LinphoneCallPaused"),
               REINVITE_SETTLES, f"Linphone's call with the phone to settle; it went through {linphone.states(call)}")
    assert not [m for m in kamailio.ladder() if m.call_id == call_id and m.method == "BYE"]


def test_pool_with_linphone_as_the_transferee_goes_on_to_the_next_agent(linphone_call: CallUp,
                                                                        sipp_target_factory: SippTargetFactory,
                                                                        kamailio: Kamailio) -> None:
    phone, linphone, call, call_id = linphone_call
    sipp_target_factory("1004", "busy")
    desk = sipp_target_factory("1003", "answer")

    result = phone.cli("transfer", "agents", check=False)

    assert result.returncode == 0, f"{result.stderr}\n{why_not(phone, kamailio, call_id)}"
    assert '"to": "sip:1003@' in result.stdout
    p, far = phone.source, linphone.source
    final = wait_in_order(kamailio, [
        ("first REFER", request(call_id, "REFER", p)),
        ("NOTIFY sipfrag 486", notify(call_id, 486, far)),
        ("second REFER", request(call_id, "REFER", p)),
        ("its 202", reply(call_id, "REFER", 202, far)),
        ("NOTIFY sipfrag 200", notify(call_id, 200, far)),
        ("BYE", request(call_id, "BYE", p)),
        ("200 to BYE", reply(call_id, "BYE", 200, far)),
    ])[4]
    refers = [m.refer_to.split("@")[0] for m in kamailio.ladder() if request(call_id, "REFER", p)(m)]
    # A REFER that crossed Linphone's own resume re-INVITE got 491 and went again: one target, sent twice.
    targets = [t for i, t in enumerate(refers) if i == 0 or refers[i - 1] != t]
    assert targets == ["<sip:1004", "<sip:1003"], refers
    assert final.subscription_state.startswith("terminated"), final.subscription_state
    assert desk.calls_received == 1

    phone.wait_state("idle")
    phone.wait_event(lambda e: e["event"] == "transfer" and e["state"] == "succeeded")
    states = [(e["state"], e["code"]) for e in phone.events if e["event"] == "transfer"]
    assert ("progress", 486) in states and ("failed", 486) not in states
    linphone.wait_event("LinphoneCallReleased", call_id=call)


# -- the phone as the transferee --------------------------------------------------------------------------


def test_the_phone_follows_a_blind_transfer_from_linphone(phone_factory, linphone_factory: LinphoneFactory,
                                                          sipp_target_factory: SippTargetFactory,
                                                          kamailio: Kamailio) -> None:
    phone = phone_factory(extra=PHONE_CONFIG).start()
    far = linphone_factory("1002", auto_answer=True)
    target = sipp_target_factory("1003", "answer")
    phone.cli("call", "1002")
    call = far.wait_event("LinphoneCallStreamsRunning").call_id
    assert call is not None
    phone.wait_state("in_call")
    [original] = phone.status()["calls"]

    far.transfer(call, target.uri)

    request_event = phone.wait_event(lambda e: e["event"] == "transfer_request")
    assert request_event["accepted"] is True and request_event["call_id"] == original["id"]
    assert request_event["uri"].startswith("sip:1003@")
    new_call = phone.wait_event(lambda e: e["event"] == "call" and e["remote_uri"].startswith("sip:1003@")
                                and e["state"] == "active")
    call_id, p = original["sip_call_id"], phone.source
    # Whoever sends it, the BYE comes after the final NOTIFY: Linphone leaves once it reads the 200 there.
    refer, _, final, _, _ = wait_in_order(kamailio, [
        ("REFER", request(call_id, "REFER", far.source)),
        ("202 Accepted", reply(call_id, "REFER", 202, p)),
        ("NOTIFY sipfrag 200", notify(call_id, 200, p)),
        ("BYE", lambda m: m.call_id == call_id and m.is_request and m.method == "BYE"),
        ("200 to BYE", reply(call_id, "BYE", 200)),
    ])
    assert "sip:1003@" in refer.refer_to
    assert final.subscription_state.startswith("terminated"), final.subscription_state
    phone.wait_event(lambda e: e["event"] == "call" and e["id"] == original["id"] and e["state"] == "ended")
    new_call_id = new_call["sip_call_id"]
    in_order(kamailio.ladder(), [
        ("the phone's INVITE to the target", lambda m: request(new_call_id, "INVITE", p)(m)
         and (m.ruri or "").startswith("sip:1003@")),
        ("its 200", reply(new_call_id, "INVITE", 200, target.source)),
    ])
    assert target.calls_received == 1
    far.wait_event("LinphoneCallReleased", call_id=call)
    [now] = phone.status()["calls"]
    assert now["sip_call_id"] == new_call_id and now["state"] == "active"
