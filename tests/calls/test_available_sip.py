"""The "available" pool on the wire: Kamailio publishes the agents' dialog state, the phone watches it
(SUBSCRIBE Event: dialog), and a transfer skips the busy agent without an INVITE to it."""

from __future__ import annotations

import time

from tests.phone_process import wait
from tests.test_transfer_sip import assert_seed_ladder

POOL = """
[transfer]
final_timeout = 4.0
[transfer.targets.anna]
uri = "1003"
[transfer.targets.ben]
uri = "1004"
[transfer.pools.agents]
targets = ["anna", "ben"]
strategy = "available"
"""


def lines(phone) -> dict[str, str]:
    return {uri.split("@")[0].removeprefix("sip:"): state for uri, state in phone.status().get("lines", {}).items()}


def test_a_busy_agent_is_skipped_without_an_invite(phone_factory, kamailio_blf, baresip_factory_blf,
                                                   sipp_target_factory_blf):
    phone = phone_factory(proxy=kamailio_blf, extra=POOL).start()
    # The agents answer 200 ms after ringing, as people (and desk phones) do. An agent that answers within a
    # millisecond of its 180 can leave Kamailio publishing "early" after "confirmed": its workers handle the
    # two replies in parallel, and the dialog then shows ringing until its next change.
    sipp_target_factory_blf("1003", "answer")
    sipp_target_factory_blf("1004", "answer")
    wait(lambda: lines(phone) == {"1003": "idle", "1004": "idle"}, 10, "both agents idle", phone)
    subscribes = [m for m in kamailio_blf.ladder() if m.source == phone.source and m.method == "SUBSCRIBE"]
    assert subscribes and all(m.event == "dialog" for m in subscribes)

    busy_with = baresip_factory_blf("1005")
    busy_with.dial(kamailio_blf.uri("1003"))  # anna takes another call
    busy_with.wait_event("CALL_ESTABLISHED")
    wait(lambda: lines(phone).get("1003") == "busy", 10, "anna busy", phone)

    caller = baresip_factory_blf("1001")
    caller.dial(kamailio_blf.uri("1000"))
    phone.wait_state("ringing")
    phone.cli("action", "answer")
    caller.wait_event("CALL_ESTABLISHED")
    phone.wait_state("in_call")
    call_id = phone.status()["calls"][0]["sip_call_id"]
    pressed = time.time()
    phone.cli("action", "transfer:agents")
    phone.wait_event(lambda e: e["event"] == "transfer" and e["state"] == "succeeded")
    assert_seed_ladder(kamailio_blf, phone, caller, call_id, "1004")
    invites_to_anna = [m for m in kamailio_blf.ladder(since=pressed)
                       if m.method == "INVITE" and m.is_request and m.to_user == "1003"]
    assert invites_to_anna == []  # skipped without an INVITE


def test_a_line_the_registrar_refuses_is_unknown_and_said_once(
    phone_factory, kamailio_blf, baresip_factory_blf
):
    ghost = f"sip:1098@{kamailio_blf.domain}"  # no such subscriber: Kamailio refuses the SUBSCRIBE
    pool = POOL.replace('targets = ["anna", "ben"]', f'targets = ["{ghost}", "anna"]')
    phone = phone_factory(proxy=kamailio_blf, extra=pool).start()
    baresip_factory_blf("1003", answermode="auto")
    wait(lambda: lines(phone).get("1003") == "idle", 10, "anna idle", phone)
    kamailio_blf.wait_for(lambda m: m.method == "SUBSCRIBE" and m.status == 404 and m.source != phone.source)
    said = "the registrar ended the subscription (404"
    wait(lambda: said in phone.log(), 10, "the refusal said", phone)
    assert lines(phone)["1098"] == "unknown"  # never taken as idle
    assert phone.log().count(said) == 1
