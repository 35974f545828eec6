"""A USB headset's call controls end to end: the phone process, real report bytes, real SIP peers.

The headset is a Jabra-like descriptor (tests/usb_headset/descriptors.py) behind a Unix socket standing in
for its hidraw node (tests/usb_headset/sim.py); the caller is baresip, the proxy Kamailio, where each SIP
message is checked.
"""

from __future__ import annotations

import pytest

from tests.test_transfer_sip import TRANSFER_CONFIG, assert_seed_ladder
from tests.usb_headset import descriptors as d
from tests.usb_headset.sim import PLUGIN, UsbHeadsetSim

CONFIG = PLUGIN + "\n[usb_headset]\nrescan_s = 0.2\n"
HOOK_DOWN, HOOK_UP = b"\x02\x01\x00", b"\x02\x00\x00"
FLASH_DOWN = b"\x02\x09\x00"
IDLE, RING, OFF_HOOK, MUTED = b"\x03\x00", b"\x03\x02", b"\x03\x01", b"\x03\x05"


@pytest.fixture
def usb_phone(phone_factory, tmp_path):
    def make(extra: str = ""):
        headset = UsbHeadsetSim(tmp_path / "hidraw", d.JABRA_LIKE, echo=jabra_echo).plug()
        phone = phone_factory(extra=CONFIG + extra, env=headset.env).start()
        headset.wait_open()
        headset.wait_report(IDLE)
        return phone, headset

    yield make


def jabra_echo(report: bytes) -> bytes | None:
    """A latching headset follows the host's Off-Hook (report 3, bit 0) and reports its hook state back."""
    if report[0] != 3:
        return None
    return HOOK_DOWN if report[1] & 1 else HOOK_UP


def ring(phone, headset, caller, kamailio):
    caller.dial(kamailio.uri("1000"))
    phone.wait_state("ringing")
    headset.wait_report(RING)


def test_lifting_the_boom_answers_and_putting_it_back_hangs_up(usb_phone, baresip_factory, kamailio):
    phone, headset = usb_phone()
    caller = baresip_factory("1001")
    ring(phone, headset, caller, kamailio)
    headset.send(HOOK_DOWN)
    ok = kamailio.wait_for(lambda m: m.source == phone.source and m.method == "INVITE" and m.status == 200)
    assert ok.kind == "reply"
    caller.wait_event("CALL_ESTABLISHED")
    headset.wait_report(OFF_HOOK)
    headset.send(HOOK_UP)
    kamailio.wait_for(lambda m: m.source == phone.source and m.method == "BYE" and m.kind == "request")
    caller.wait_event("CALL_CLOSED")
    headset.wait_report(IDLE)
    phone.wait_state("idle")


def test_mute_both_ways(usb_phone, baresip_factory, kamailio):
    phone, headset = usb_phone()
    caller = baresip_factory("1001")
    ring(phone, headset, caller, kamailio)
    headset.send(HOOK_DOWN)
    caller.wait_event("CALL_ESTABLISHED")
    headset.wait_report(OFF_HOOK)
    phone.wait_state("in_call")
    headset.send(b"\x02\x05\x00")  # the headset's mute toggle
    headset.wait_report(MUTED)
    phone.wait_event(lambda e: e["event"] == "call" and e["mic_muted"])
    phone.cli("action", "mute_call_toggle")  # unmuted from the CLI (or a GPIO button): the LED follows
    headset.wait_report(OFF_HOOK)
    caller.hangup()
    headset.wait_report(IDLE)


def test_flash_mapped_to_a_blind_transfer_gives_the_seeds_ladder(usb_phone, baresip_factory, sipp_target_factory, kamailio):
    mapping = '\n[buttons.controls.flash.in_call]\nsingle = "transfer:desk"\n'
    phone, headset = usb_phone(TRANSFER_CONFIG + mapping)
    caller = baresip_factory("1001")
    sipp_target_factory("1003", "answer")
    ring(phone, headset, caller, kamailio)
    headset.send(HOOK_DOWN)
    caller.wait_event("CALL_ESTABLISHED")
    phone.wait_state("in_call")
    call_id = phone.status()["calls"][0]["sip_call_id"]
    headset.send(FLASH_DOWN)
    headset.send(HOOK_DOWN)  # Flash released, the boom still down
    phone.wait_event(lambda e: e["event"] == "transfer" and e["state"] == "succeeded")
    assert_seed_ladder(kamailio, phone, caller, call_id, "1003")
    headset.wait_report(IDLE)


def test_a_headset_unplugged_mid_call_keeps_the_call_and_is_picked_up_again(usb_phone, baresip_factory, kamailio):
    phone, headset = usb_phone()
    caller = baresip_factory("1001")
    ring(phone, headset, caller, kamailio)
    headset.send(HOOK_DOWN)
    caller.wait_event("CALL_ESTABLISHED")
    headset.wait_report(OFF_HOOK)
    headset.unplug()
    phone.wait_event(lambda e: e["event"] == "input_device" and e["source"] == "usb_headset" and e["state"] == "disconnected")
    assert phone.status()["state"] == "in_call"
    headset.plug()
    headset.wait_open()
    headset.wait_report(OFF_HOOK)  # the call in progress, shown at once
    headset.send(HOOK_UP)
    kamailio.wait_for(lambda m: m.source == phone.source and m.method == "BYE" and m.kind == "request")
