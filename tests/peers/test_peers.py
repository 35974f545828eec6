"""The SIP peers themselves work: Kamailio authenticates and routes, baresip and sipp place and take calls."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .fixtures import PASSWORDS, BaresipFactory, SippTargetFactory
from .kamailio import Kamailio
from .ladder import SipMessage, format_ladder
from .sipp import register
from .support import PeerError


def _methods(ladder: list[SipMessage], call_id: str) -> list[str]:
    """The call's messages as "INVITE" / "180" tokens, without the proxy's own 100 Trying."""
    return [m.method if m.is_request else str(m.status) for m in ladder
            if m.call_id == call_id and not (m.kind == "local-reply" and m.status == 100)]


def test_register_is_challenged_then_bound_and_removed(kamailio: Kamailio, tmp_path: Path) -> None:
    since = time.time()
    register("1009", PASSWORDS["1009"], kamailio, 5999, workdir=tmp_path)

    assert kamailio.contacts("1009") == ["sip:1009@127.0.0.1:5999"]
    registers = [m for m in kamailio.ladder(since) if m.method == "REGISTER"]
    assert [(m.kind, m.status, m.cseq) for m in registers] == [
        ("request", None, 1), ("local-reply", 401, 1), ("request", None, 2), ("local-reply", 200, 2)]
    assert registers[0].auth_user is None and registers[2].auth_user == "1009"
    assert registers[3].expires == 300

    register("1009", PASSWORDS["1009"], kamailio, 5999, expires=0, workdir=tmp_path)
    assert kamailio.contacts("1009") == []
    assert not kamailio.registered("1009")


def test_register_with_a_wrong_password_is_refused(kamailio: Kamailio, tmp_path: Path) -> None:
    since = time.time()
    with pytest.raises(PeerError):
        register("1008", "wrong", kamailio, 5998, workdir=tmp_path, timeout=3.0)
    assert not kamailio.registered("1008")
    replies = [m.status for m in kamailio.ladder(since) if m.kind == "local-reply" and m.to_user == "1008"]
    assert replies and set(replies) == {401}


def test_baresip_calls_an_answering_target_through_the_proxy(
        kamailio: Kamailio, baresip_factory: BaresipFactory, sipp_target_factory: SippTargetFactory) -> None:
    target = sipp_target_factory("1003", "answer")
    caller = baresip_factory("1001")
    since = time.time()

    caller.dial(target.uri)
    established = caller.wait_event("CALL_ESTABLISHED")
    assert "1003" in established["peeruri"]
    caller.hangup()
    caller.wait_event("CALL_CLOSED")
    bye_ok = kamailio.wait_for(lambda m: m.method == "BYE" and m.status == 200, since=since)

    assert _methods(kamailio.ladder(since), bye_ok.call_id) == ["INVITE", "180", "200", "ACK", "BYE", "200"]
    invite = next(m for m in kamailio.ladder(since) if m.method == "INVITE" and m.is_request)
    assert (invite.source, invite.from_user, invite.ruri) == (caller.source, "1001", target.uri)
    assert target.calls_received == 1


def test_baresip_sees_a_busy_target_close_the_call(
        kamailio: Kamailio, baresip_factory: BaresipFactory, sipp_target_factory: SippTargetFactory) -> None:
    target = sipp_target_factory("1004", "busy")
    caller = baresip_factory("1001")
    since = time.time()

    caller.dial(target.uri)

    assert caller.wait_event("CALL_CLOSED")["param"] == "486 Busy Here"
    busy = kamailio.wait_for(lambda m: m.status == 486, since=since)
    # The ACK for a failure ends at the proxy (hop by hop); tm sends its own ACK to the target.
    kamailio.wait_for(lambda m: m.method == "ACK" and m.call_id == busy.call_id, since=since)
    assert _methods(kamailio.ladder(since), busy.call_id) == ["INVITE", "486", "ACK"]


def test_cancel_of_a_ringing_call_reaches_the_target(
        kamailio: Kamailio, baresip_factory: BaresipFactory, sipp_target_factory: SippTargetFactory) -> None:
    target = sipp_target_factory("1005", "no_answer")
    caller = baresip_factory("1001")
    since = time.time()

    caller.dial(target.uri)
    caller.wait_event("CALL_RINGING")
    caller.hangup()

    terminated = kamailio.wait_for(lambda m: m.status == 487, since=since)
    assert _methods(kamailio.ladder(since), terminated.call_id)[:5] == ["INVITE", "180", "CANCEL", "200", "200"]


@pytest.mark.parametrize(("user", "status"), [("1999", 404), ("1007", 480)])
def test_unknown_and_unregistered_users_are_refused(
        kamailio: Kamailio, baresip_factory: BaresipFactory, user: str, status: int) -> None:
    caller = baresip_factory("1001")

    caller.dial(kamailio.uri(user))

    assert caller.wait_event("CALL_CLOSED")["param"].startswith(str(status))


def test_baresip_transferee_follows_a_blind_transfer(
        kamailio: Kamailio, baresip_factory: BaresipFactory, sipp_target_factory: SippTargetFactory) -> None:
    target = sipp_target_factory("1003", "answer")
    transferor, transferee = baresip_factory("1001"), baresip_factory("1002")
    transferor.dial(transferee.uri)
    transferee.wait_event("CALL_INCOMING")
    transferee.accept()
    transferor.wait_event("CALL_ESTABLISHED")
    since = time.time()

    transferor.transfer(target.uri)

    transferee.wait_event("CALL_ESTABLISHED", where=lambda e: "1003" in e["peeruri"])
    final = kamailio.wait_for(lambda m: m.method == "NOTIFY" and m.is_request
                              and (m.subscription_state or "").startswith("terminated"), since=since)
    ladder = kamailio.ladder(since)
    refer = next(m for m in ladder if m.method == "REFER" and m.is_request)
    assert (refer.source, refer.refer_to) == (transferor.source, target.uri)
    assert any(m.method == "REFER" and m.status == 202 and m.source == transferee.source for m in ladder)
    notifies = [m for m in ladder if m.method == "NOTIFY" and m.is_request]
    assert [n.body_first_line for n in notifies] == ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
    assert all(n.event and n.event.startswith("refer") and n.content_type == "message/sipfrag" for n in notifies)
    assert final is notifies[-1] or final == notifies[-1]
    assert any(m.method == "INVITE" and m.is_request and m.source == transferee.source
               and m.ruri == target.uri for m in ladder)
    names = {transferor.source: "A 1001", transferee.source: "B 1002", **dict.fromkeys(target.sources, "C 1003")}
    picture = format_ladder(ladder, names, proxy=kamailio.domain)
    assert "REFER" in picture and "SIP/2.0 200 OK  [terminated]" in picture
    assert max(len(line) for line in picture.splitlines()) <= 100


def test_refer_is_challenged_when_the_proxy_asks_for_it(
        kamailio_challenging_refer: Kamailio, baresip_factory_challenging_refer: BaresipFactory,
        sipp_target_factory_challenging_refer: SippTargetFactory) -> None:
    proxy = kamailio_challenging_refer
    target = sipp_target_factory_challenging_refer("1003", "answer")
    transferor = baresip_factory_challenging_refer("1001")
    transferee = baresip_factory_challenging_refer("1002", answermode="auto")
    transferor.dial(transferee.uri)
    transferor.wait_event("CALL_ESTABLISHED")
    since = time.time()

    transferor.transfer(target.uri)

    accepted = proxy.wait_for(lambda m: m.method == "REFER" and m.status == 202, since=since)
    refers = [m for m in proxy.ladder(since) if m.method == "REFER" and m.call_id == accepted.call_id]
    assert [(m.kind, m.status) for m in refers] == [
        ("request", None), ("local-reply", 407), ("request", None), ("reply", 202)]
    assert (refers[0].auth_user, refers[2].auth_user) == (None, "1001")
    assert refers[2].cseq == refers[0].cseq + 1


def test_refer_to_a_barred_target_is_declined_by_the_proxy(
        kamailio: Kamailio, baresip_factory: BaresipFactory) -> None:
    transferor = baresip_factory("1001")
    transferee = baresip_factory("1002", answermode="auto")
    transferor.dial(transferee.uri)
    transferor.wait_event("CALL_ESTABLISHED")
    since = time.time()

    transferor.transfer(kamailio.uri("1099"))

    declined = kamailio.wait_for(lambda m: m.method == "REFER" and m.status is not None, since=since)
    assert (declined.kind, declined.status, declined.destination) == ("local-reply", 603, transferor.source)
    assert not [m for m in kamailio.ladder(since) if m.method == "REFER" and m.source == transferee.source]
    assert transferor.wait_event("TRANSFER_FAILED")["param"] == "603 Decline"


def test_hangup_by_call_id_picks_the_call_when_there_are_two(
        baresip_factory: BaresipFactory, sipp_target_factory: SippTargetFactory) -> None:
    ringing_target = sipp_target_factory("1005", "no_answer")
    caller, callee = baresip_factory("1001"), baresip_factory("1002", answermode="auto")
    caller.dial(callee.uri)
    first = caller.wait_event("CALL_ESTABLISHED")["id"]
    caller.dial(ringing_target.uri)
    caller.wait_event("CALL_RINGING", where=lambda e: e["id"] != first)

    caller.hangup(first)  # a bare hangup() would end the newest call, the one still ringing

    assert callee.wait_event("CALL_CLOSED")["id"] == first
    assert [e["id"] for e in caller.events if e["type"] == "CALL_CLOSED"] == [first]
    with pytest.raises(PeerError):
        caller.hangup("no-such-call")
