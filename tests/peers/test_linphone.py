"""The Linphone peer itself works: it registers, calls and answers through the proxy, reports call states
and leaves clean."""

from __future__ import annotations

import time

import pytest

from .fixtures import LinphoneFactory
from .kamailio import Kamailio
from .linphone import DaemonResponse
from .support import PeerError


def test_daemon_answers_and_events_are_parsed() -> None:
    answer = DaemonResponse.parse("Status: Ok\n\nSize: 0\nEvent-type: call-state-changed\n\n"
                                  "Event: LinphoneCallIncomingReceived\nFrom: <sip:1001@127.0.0.1:5080>\nId: 3\n\n")
    assert answer.ok and answer.fields["Event"] == "LinphoneCallIncomingReceived" and answer.fields["Id"] == "3"
    assert answer.fields["From"] == "<sip:1001@127.0.0.1:5080>"
    refused = DaemonResponse.parse("Status: Error\nReason: No call with such id.\n")
    assert not refused.ok and refused.reason == "No call with such id."
    with pytest.raises(PeerError):
        DaemonResponse.parse("daemon-linphone>")


def test_linphone_calls_linphone_through_the_proxy_and_unregisters_on_stop(
        kamailio: Kamailio, linphone_factory: LinphoneFactory) -> None:
    callee = linphone_factory("1006")
    caller = linphone_factory("1002")
    assert kamailio.registered("1002") and kamailio.registered("1006")
    since = time.time()

    call = caller.call(callee.uri)
    incoming = callee.wait_event("LinphoneCallIncomingReceived")
    assert incoming.call_id is not None and "1002@" in incoming.fields["From"]
    callee.answer(incoming.call_id)
    caller.wait_event("LinphoneCallStreamsRunning", call_id=call)
    callee.wait_event("LinphoneCallStreamsRunning", call_id=incoming.call_id)
    assert caller.call_state(call) == "LinphoneCallStreamsRunning"
    caller.terminate(call)
    callee.wait_event("LinphoneCallReleased", call_id=incoming.call_id)
    caller.wait_event("LinphoneCallReleased", call_id=call)
    assert caller.call_state(call) is None
    bye_ok = kamailio.wait_for(lambda m: m.method == "BYE" and m.status == 200, since=since)
    ladder = kamailio.ladder(since)
    invite = next(m for m in ladder if m.is_request and m.method == "INVITE")
    bye = next(m for m in ladder if m.is_request and m.method == "BYE")
    assert invite.source == bye.source == caller.source and bye_ok.source == callee.source
    assert invite.call_id == bye.call_id == bye_ok.call_id

    caller.stop()
    assert not kamailio.registered("1002")
