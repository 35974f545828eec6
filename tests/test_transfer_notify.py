"""How a transfer ends when the transferee's final NOTIFY is unusual: the phone decides from the evidence.

A sipp transferee (tests/peers/scenarios/uas_transferee.xml) answers the phone's call, takes its REFER and
ends the transfer with one NOTIFY chosen by the test. The phone's outcome is read from its `transfer`
command and event stream, the wire from Kamailio's view. `final_timeout` is far longer than any of these
tests, so an outcome that names the NOTIFY's evidence cannot be the timeout's.
"""

from __future__ import annotations

import pytest

from tests.phone_process import wait

CONFIG = """
[transfer]
final_timeout = {final_timeout}

[transfer.targets.desk]
uri = "1003"
"""


def transfer_with_final_notify(
    phone_factory, sipp_target_factory, kamailio, final_timeout: float = 120.0, **variables: str
):
    """The phone calls a sipp transferee (1007), which ends the phone's REFER with the NOTIFY ``variables`` say."""
    defaults = {"extra": "X-Case: -", "refuse491": "no", "refer491": "no"}
    transferee = sipp_target_factory("1007", "transferee", variables={**defaults, **variables})
    phone = phone_factory(extra=CONFIG.format(final_timeout=final_timeout)).start()
    phone.cli("call", "1007")
    phone.wait_state("in_call")
    result = phone.cli("transfer", "desk", check=False)
    return phone, transferee, result


def notify_answers(kamailio, phone) -> list[int]:
    """Status codes the phone answered NOTIFYs with, as the proxy saw them."""
    return [m.status for m in kamailio.ladder() if m.method == "NOTIFY" and not m.is_request and m.source == phone.source]


def test_a_malformed_subscription_state_with_a_final_200_is_a_success(phone_factory, sipp_target_factory, kamailio):
    # Linphone 5.1 writes this; the state ("terminated") and the sipfrag are unambiguous.
    phone, _, result = transfer_with_final_notify(
        phone_factory, sipp_target_factory, kamailio,
        substate="terminated;reason=reason=noresource", sipfrag="SIP/2.0 200 OK",
    )
    assert result.returncode == 0, result.stderr
    assert '"code": 200' in result.stdout
    assert 200 in notify_answers(kamailio, phone)
    phone.wait_state("idle")  # the phone left the call with BYE


@pytest.mark.parametrize(
    "sipfrag",
    ["this is not a status line", "SIP/2.0 100 Trying"],
    ids=["unreadable sipfrag", "no final status"],
)
def test_a_subscription_ended_without_a_final_status_fails_at_once(
    phone_factory, sipp_target_factory, kamailio, sipfrag
):
    phone, _, result = transfer_with_final_notify(
        phone_factory, sipp_target_factory, kamailio, substate="terminated;reason=noresource", sipfrag=sipfrag
    )
    assert result.returncode != 0
    assert "within" not in result.stderr, result.stderr  # not final_timeout's "no final NOTIFY within 120 s"
    assert "the caller is back on the line" in result.stderr, result.stderr
    failed = [e for e in phone.events if e["event"] == "transfer" and e["state"] == "failed"]
    assert failed, phone.events
    phone.wait_state("in_call")  # taken off hold: the call goes on
    assert [c["state"] for c in phone.status()["calls"]] == ["active"]


def test_a_notify_with_a_broken_header_is_answered_400(phone_factory, sipp_target_factory, kamailio):
    phone, _, result = transfer_with_final_notify(
        phone_factory, sipp_target_factory, kamailio, final_timeout=3.0,
        substate="terminated", sipfrag="SIP/2.0 200 OK", extra="Contact: <sip:broken",
    )
    assert 400 in notify_answers(kamailio, phone)
    # Nothing readable ended the transfer: the phone's own deadline does, and the caller is back.
    assert "no final NOTIFY within 3 s" in result.stderr, result.stderr
    phone.cli("hangup")
    phone.wait_state("idle")


def test_a_resume_refused_with_491_is_sent_again(phone_factory, sipp_target_factory, kamailio):
    # The far end re-INVITEs at the same moment (here: refuses once with 491). RFC 3261 14.1: try again
    # after a random 2.1-4 s, as this phone made the dialog's Call-ID; the caller must not stay on hold.
    phone, _, result = transfer_with_final_notify(
        phone_factory, sipp_target_factory, kamailio,
        substate="terminated;reason=noresource", sipfrag="SIP/2.0 486 Busy Here", refuse491="once",
    )
    assert "the caller is back on the line" in result.stderr, result.stderr
    call_id = phone.status()["calls"][0]["sip_call_id"]

    def reinvite_answers():
        return [m.status for m in kamailio.ladder() if m.call_id == call_id and m.method == "INVITE" and (m.status or 0) >= 200]

    # The call's INVITE, the hold, the refused resume and the resume sent again: 200, 200, 491, 200.
    wait(lambda: reinvite_answers()[-2:] == [491, 200], 10, "the resume to be sent again and answered", phone)
    assert [c["state"] for c in phone.status()["calls"]] == ["active"]
    assert "491" in phone.log()


def test_a_refer_refused_with_491_is_sent_again(phone_factory, sipp_target_factory, kamailio):
    # Linphone answers 491 to a REFER that crosses its own re-INVITE: the transfer goes on after the delay.
    phone, _, result = transfer_with_final_notify(
        phone_factory, sipp_target_factory, kamailio,
        substate="terminated;reason=noresource", sipfrag="SIP/2.0 200 OK", refer491="once",
    )
    assert result.returncode == 0, result.stderr
    call_id = next(e["sip_call_id"] for e in phone.events if e["event"] == "call")
    refer_answers = [m.status for m in kamailio.ladder() if m.call_id == call_id and m.method == "REFER" and m.status]
    assert refer_answers == [491, 202], refer_answers
    phone.wait_state("idle")
