"""Blind transfer on the wire: Kamailio as proxy, baresip as the transferee, sipp as the target.

The ladder is asserted as Kamailio saw it (RFC 3515 REFER, RFC 5589 sipfrag NOTIFYs), never on the phone's
own log. Targets: 1003 answers, 1004 is busy, 1005 never answers, 1099 is refused by the PBX's REFER policy.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.peers.kamailio import SipMessage

TRANSFER_CONFIG = """
[transfer]
default = "desk"
final_timeout = 4.0

[transfer.targets.desk]
uri = "1003"
label = "Front desk"

[transfer.targets.busy]
uri = "1004"

[transfer.targets.silent]
uri = "1005"

[transfer.targets.forbidden]
uri = "1099"

[transfer.pools.agents]
targets = ["busy", "desk"]
strategy = "ordered"
"""

Step = Callable[[SipMessage], bool]


def in_order(ladder: list[SipMessage], steps: list[tuple[str, Step]]) -> list[SipMessage]:
    """Find each step after the previous one; fail naming the first step that is missing."""
    found, i = [], 0
    for name, step in steps:
        while i < len(ladder) and not step(ladder[i]):
            i += 1
        if i == len(ladder):
            seen = "\n".join(f"  {m.source} {m.label} {m.call_id[:12]}" for m in ladder)
            raise AssertionError(f"step {name!r} not found in order; the proxy saw:\n{seen}")
        found.append(ladder[i])
        i += 1
    return found


@pytest.fixture
def call_up(phone_factory, baresip_factory, kamailio):
    """A phone in a call with baresip 1001 (who called it), answered by a button press."""
    phone = phone_factory(extra=TRANSFER_CONFIG).start()
    caller = baresip_factory("1001")
    caller.dial(kamailio.uri("1000"))
    phone.wait_state("ringing")
    phone.cli("press", "main", "single")
    caller.wait_event("CALL_ESTABLISHED")
    phone.wait_state("in_call")
    call_id = phone.status()["calls"][0]["sip_call_id"]
    return phone, caller, call_id


def assert_seed_ladder(kamailio, phone, caller, call_id, target_user) -> list[SipMessage]:
    """The seed's ladder, in order; returns the messages of the main chain (hold ... 200 to BYE)."""
    p, c = phone.source, caller.source
    ladder = kamailio.ladder()

    def in_dialog(m):
        return m.call_id == call_id

    def notify(first_line):
        return lambda m: in_dialog(m) and m.method == "NOTIFY" and m.is_request and m.body_first_line == first_line

    chain = in_order(
        ladder,
        [
            ("hold re-INVITE", lambda m: in_dialog(m) and m.is_request and m.method == "INVITE" and m.source == p),
            ("its 200", lambda m: in_dialog(m) and m.method == "INVITE" and m.status == 200 and m.source == c),
            ("REFER", lambda m: in_dialog(m) and m.is_request and m.method == "REFER" and m.source == p),
            ("NOTIFY 100 Trying", notify("SIP/2.0 100 Trying")),
            ("NOTIFY 200 OK", notify("SIP/2.0 200 OK")),
            ("BYE", lambda m: in_dialog(m) and m.is_request and m.method == "BYE" and m.source == p),
            ("200 to BYE", lambda m: in_dialog(m) and m.method == "BYE" and m.status == 200 and m.source == c),
        ],
    )
    refer, trying, final = chain[2], chain[3], chain[4]
    assert final.subscription_state.startswith("terminated"), final.subscription_state
    # Independent transactions may cross on the wire: the 202 and the first NOTIFY come in either order, each
    # 200 answers its own NOTIFY (by CSeq), and the transferee may call the target before its NOTIFY 100.
    after_refer = ladder[ladder.index(refer) :]
    assert [m for m in after_refer if in_dialog(m) and m.method == "REFER" and m.status == 202], "no 202 Accepted"
    between = ladder[ladder.index(refer) : ladder.index(final)]
    assert [m for m in between if m.is_request and m.method == "INVITE" and m.source == c
            and m.call_id != call_id and (m.ruri or "").startswith(f"sip:{target_user}@")], "no INVITE to the target"
    for n in (trying, final):
        later = ladder[ladder.index(n):]
        assert [m for m in later if m.call_id == call_id and m.method == "NOTIFY" and m.status == 200
                and m.cseq == n.cseq and m.source == p], f"no 200 to {n.body_first_line}"
    return chain


def test_blind_transfer_from_the_cli_gives_the_seed_ladder(call_up, sipp_target_factory, kamailio):
    phone, caller, call_id = call_up
    target = sipp_target_factory("1003", "answer")
    result = phone.cli("transfer", "desk")
    assert '"code": 200' in result.stdout
    found = assert_seed_ladder(kamailio, phone, caller, call_id, "1003")
    refer = found[2]
    assert refer.refer_to.startswith("<sip:1003@") and refer.refer_to.endswith(">")
    assert refer.referred_by.startswith("<sip:1000@127.0.0.1")
    assert found[3].content_type.startswith("message/sipfrag")
    phone.wait_state("idle")
    assert target.calls_received >= 1
    states = [e["state"] for e in phone.events if e["event"] == "transfer"]
    assert states[0] == "started" and states[-1] == "succeeded"
    assert any(e["event"] == "state" and e["state"] == "transferring" for e in phone.events)


def test_double_press_blind_transfers_to_the_default_target(call_up, sipp_target_factory, kamailio):
    phone, caller, call_id = call_up
    sipp_target_factory("1003", "answer")
    assert phone.cli("press", "main", "double").stdout.strip() == "transfer"
    assert_seed_ladder(kamailio, phone, caller, call_id, "1003")
    phone.wait_state("idle")


def assert_resumed_after_failure(phone, caller, call_id, kamailio, failure: Step, code: int | None):
    p = phone.source
    in_order(
        kamailio.ladder(),
        [
            ("REFER", lambda m: m.call_id == call_id and m.is_request and m.method == "REFER" and m.source == p),
            ("the failure", failure),
            ("unhold re-INVITE", lambda m: m.call_id == call_id and m.is_request and m.method == "INVITE" and m.source == p),
            ("its 200", lambda m: m.call_id == call_id and m.method == "INVITE" and m.status == 200 and m.source == caller.source),
        ],
    )
    phone.wait_state("in_call")
    call = phone.status()["calls"][0]
    assert call["state"] == "active" and call["sip_call_id"] == call_id
    failed = phone.wait_event(lambda e: e["event"] == "transfer" and e["state"] == "failed")
    if code is not None:
        assert failed["code"] == code
    assert not [m for m in kamailio.ladder() if m.call_id == call_id and m.method == "BYE"]
    assert not [e for e in caller.events if e.get("type") == "CALL_CLOSED" and e.get("id") == call_id]


def test_target_busy_gives_the_call_back(call_up, sipp_target_factory, kamailio):
    phone, caller, call_id = call_up
    sipp_target_factory("1004", "busy")
    result = phone.cli("transfer", "busy", check=False)
    assert result.returncode == 1
    assert "transfer to busy failed: 486" in result.stderr and "back on the line" in result.stderr
    notify_486 = lambda m: m.call_id == call_id and m.method == "NOTIFY" and (m.body_first_line or "").startswith("SIP/2.0 486")
    assert_resumed_after_failure(phone, caller, call_id, kamailio, notify_486, 486)


def test_target_never_answering_times_out_and_gives_the_call_back(call_up, sipp_target_factory, kamailio):
    phone, caller, call_id = call_up
    sipp_target_factory("1005", "no_answer")
    # The transfer lasts its final_timeout (4 s), longer than the CLI waits for a word from the phone: the
    # phone's keepalives carry it through to the phone's own outcome line.
    result = phone.cli("--timeout", "3", "transfer", "silent", check=False)
    [outcome] = result.stderr.splitlines()
    assert result.returncode == 1 and outcome.startswith("firmware-app: ") and "no final NOTIFY within 4 s" in outcome
    ringing = lambda m: m.call_id == call_id and m.method == "NOTIFY" and (m.body_first_line or "").startswith("SIP/2.0 1")
    assert_resumed_after_failure(phone, caller, call_id, kamailio, ringing, None)


def test_refer_refused_by_the_pbx_gives_the_call_back(call_up, kamailio):
    phone, caller, call_id = call_up
    result = phone.cli("transfer", "forbidden", check=False)
    assert result.returncode == 1 and "603" in result.stderr
    refused = lambda m: m.call_id == call_id and m.method == "REFER" and m.status == 603
    assert_resumed_after_failure(phone, caller, call_id, kamailio, refused, 603)


def test_pool_goes_on_to_the_next_agent(call_up, sipp_target_factory, kamailio):
    phone, caller, call_id = call_up
    sipp_target_factory("1004", "busy")
    desk = sipp_target_factory("1003", "answer")
    result = phone.cli("transfer", "agents")
    assert '"to": "sip:1003@' in result.stdout
    p = phone.source
    refers = [m for m in kamailio.ladder() if m.call_id == call_id and m.method == "REFER" and m.is_request]
    assert [m.refer_to.split("@")[0] for m in refers] == ["<sip:1004", "<sip:1003"]
    in_order(
        kamailio.ladder(),
        [
            ("NOTIFY 486", lambda m: m.call_id == call_id and (m.body_first_line or "").startswith("SIP/2.0 486")),
            ("second REFER", lambda m: m.call_id == call_id and m.is_request and m.method == "REFER" and m.source == p),
            ("NOTIFY 200", lambda m: m.call_id == call_id and m.body_first_line == "SIP/2.0 200 OK"),
            ("BYE", lambda m: m.call_id == call_id and m.is_request and m.method == "BYE" and m.source == p),
        ],
    )
    assert desk.calls_received >= 1
    phone.wait_state("idle")
    states = [(e["state"], e["code"]) for e in phone.events if e["event"] == "transfer"]
    assert ("progress", 486) in states and states[-1][0] == "succeeded"
    assert ("failed", 486) not in states


def test_transfer_without_a_call_or_to_an_unknown_name_is_refused(phone_factory, kamailio):
    phone = phone_factory(extra=TRANSFER_CONFIG).start()
    result = phone.cli("transfer", "desk", check=False)
    assert result.returncode == 1 and "no call" in result.stderr
    result = phone.cli("transfer", "nobody", check=False)
    assert result.returncode == 1 and "unknown transfer target 'nobody' (known: agents, busy, desk" in result.stderr
    assert not [m for m in kamailio.ladder() if m.method == "REFER" and m.source == phone.source]


def test_a_challenged_refer_is_sent_again_with_credentials(
    phone_factory, baresip_factory_challenging_refer, sipp_target_factory_challenging_refer, kamailio_challenging_refer
):
    proxy = kamailio_challenging_refer
    phone = phone_factory(extra=TRANSFER_CONFIG, proxy=proxy).start()
    caller = baresip_factory_challenging_refer("1001")
    sipp_target_factory_challenging_refer("1003", "answer")
    caller.dial(proxy.uri("1000"))
    phone.wait_state("ringing")
    phone.cli("answer")
    caller.wait_event("CALL_ESTABLISHED")
    call_id = phone.status()["calls"][0]["sip_call_id"]
    phone.cli("transfer", "desk")
    p = phone.source
    in_order(
        proxy.ladder(),
        [
            ("REFER", lambda m: m.call_id == call_id and m.is_request and m.method == "REFER" and m.source == p),
            ("407", lambda m: m.call_id == call_id and m.method == "REFER" and m.status == 407),
            ("REFER with credentials", lambda m: m.call_id == call_id and m.is_request and m.method == "REFER"
             and m.source == p and m.auth_user == "1000"),
            ("202", lambda m: m.call_id == call_id and m.method == "REFER" and m.status == 202),
            ("NOTIFY 200 OK", lambda m: m.call_id == call_id and m.body_first_line == "SIP/2.0 200 OK"),
            ("BYE", lambda m: m.call_id == call_id and m.is_request and m.method == "BYE" and m.source == p),
        ],
    )


def test_call_ended_by_the_caller_during_a_transfer_is_a_failure(call_up, sipp_target_factory, kamailio):
    phone, caller, call_id = call_up
    sipp_target_factory("1005", "no_answer")
    transfer = subprocess.Popen(
        [sys.executable, "-m", "firmware_app.cli", "--socket", str(phone.socket), "transfer", "silent"],
        stderr=subprocess.PIPE, text=True,
    )
    phone.wait_state("transferring")
    kamailio.wait_for(lambda m: m.call_id == call_id and m.method == "REFER" and m.status == 202)
    caller.hangup(call_id)  # the call with the phone, not baresip's newer call to the target
    _, err = transfer.communicate(timeout=10)
    # Either the call's end or the transferee's cancelled INVITE (NOTIFY 487) reaches the phone first.
    assert transfer.returncode == 1
    assert "the call ended during the transfer" in err or "487" in err, err
    phone.wait_state("idle")
    phone.wait_event(lambda e: e["event"] == "transfer" and e["state"] == "failed")
    assert not [m for m in kamailio.ladder() if m.call_id == call_id and m.is_request and m.method == "BYE"
                and m.source == phone.source], "the phone must not BYE a call that is already gone"


def test_attended_transfer_refers_with_replaces(call_up, sipp_target_factory, kamailio):
    phone, caller, call_id = call_up
    sipp_target_factory("1003", "answer")
    phone.cli("action", "attended_transfer:desk")
    p = phone.source
    ladder = kamailio.ladder()
    consult = [m for m in ladder if m.is_request and m.method == "INVITE" and m.source == p and m.call_id != call_id]
    assert consult and consult[0].ruri.startswith("sip:1003@")
    refer = in_order(
        ladder,
        [
            ("hold", lambda m: m.call_id == call_id and m.is_request and m.method == "INVITE" and m.source == p),
            ("consultation call answered", lambda m: m.call_id == consult[0].call_id and m.method == "INVITE" and m.status == 200),
            ("REFER", lambda m: m.call_id == call_id and m.is_request and m.method == "REFER" and m.source == p),
            ("NOTIFY 200 OK", lambda m: m.call_id == call_id and m.body_first_line == "SIP/2.0 200 OK"),
        ],
    )[2]
    assert "Replaces=" in refer.refer_to and consult[0].call_id.split("@")[0] in refer.refer_to.replace("%40", "@")
    replacing = [m for m in kamailio.ladder() if m.is_request and m.method == "INVITE" and m.source == caller.source
                 and m.call_id not in (call_id,)]
    assert replacing, "the transferee never called the target"
    phone.wait_state("idle")
