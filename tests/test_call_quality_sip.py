"""A call's audio quality at its end, from the RTCP PJSUA2 kept, after a real call with baresip."""

from __future__ import annotations

import time


def test_a_calls_end_reports_its_rtcp_figures_and_a_mos(phone_factory, baresip_factory, kamailio):
    phone = phone_factory().start()
    caller = baresip_factory("1001")
    caller.dial(kamailio.uri("1000"))
    phone.wait_state("ringing")
    phone.cli("action", "answer")
    caller.wait_event("CALL_ESTABLISHED")
    time.sleep(4)  # a few seconds of audio (50 packets a second from baresip)
    phone.cli("action", "hangup")
    quality = phone.wait_event(lambda e: e["event"] == "call_quality", timeout=10)
    assert quality["rx_packets"] > 150
    assert quality["tx_packets"] > 0  # the phone's null device is silence: voice activity detection sends little
    assert quality["rx_lost"] == 0 and quality["rx_loss_percent"] == 0.0  # loopback loses nothing
    assert 0 < quality["jitter_ms"] < 50
    assert 4.0 <= quality["mos"] <= 4.5
