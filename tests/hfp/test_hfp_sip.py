"""A Bluetooth headset's calls end to end: the phone process, the real bluealsa, and real SIP peers.

The headset is played against bluealsa on a private bus (tests/hfp/bluealsa_rig.py); the caller is baresip,
the registrar and proxy Kamailio, where each SIP message is checked. The call-audio tests also give the
phone the tests' PulseAudio devices (tests/audio/conftest.py), with an ALSA conf in which the headset's PCM
name, ``bluetooth_headset``, is a PulseAudio sink and source of its own: which device PJSUA2 opened for the
call shows in PulseAudio. SCO itself needs a radio; on a device that name is bluealsa's SCO PCM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.audio.conftest import AUDIO, PulseAudio
from tests.hfp.bluealsa_rig import Bluealsa, Headset
from tests.phone_process import PhoneProcess, wait
from tests.test_transfer_sip import TRANSFER_CONFIG, assert_seed_ladder

HFP = "\n[hfp]\nretry_first_s = 0.2\nretry_max_s = 1.0\n"
ADDRESS = "00:11:22:33:44:55"

#: The headset's PCM as PulseAudio devices of its own, beside the tests' wired Headset.
BLUETOOTH_ASOUNDRC = """
pcm.bluetooth_headset {
    type asym
    playback.pcm { type pulse; device bt_out }
    capture.pcm { type pulse; device bt_in }
    hint { show on; description "Bluetooth headset (call audio over SCO)" }
}
"""
BLUETOOTH_PA = (
    "load-module module-null-sink sink_name=bt_out\n"
    "load-module module-sine-source source_name=bt_in frequency=660\n"
)


@pytest.fixture(scope="module")
def bt_pulse(tmp_path_factory: pytest.TempPathFactory):
    """A PulseAudio of these tests' own whose ALSA view also has ``bluetooth_headset``."""
    daemon = PulseAudio(tmp_path_factory.mktemp("bt-pulse"))
    for name, text in ((daemon.home / ".asoundrc", BLUETOOTH_ASOUNDRC), (daemon.root / "default.pa", BLUETOOTH_PA)):
        with open(name, "a") as f:
            f.write(text)
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def hfp_phone(phone_factory, bluealsa: Bluealsa) -> Callable[..., PhoneProcess]:
    """make(extra="", env=None) -> a started phone with ``[hfp]`` on the rig's system bus."""

    def make(extra: str = "", env: dict[str, str] | None = None) -> PhoneProcess:
        env = {**(env or {}), "DBUS_SYSTEM_BUS_ADDRESS": bluealsa.bus_address}
        return phone_factory(extra=HFP + extra, env=env).start()

    return make


def headset_status(phone: PhoneProcess) -> list[dict[str, Any]]:
    return phone.status().get("hfp", {}).get("headsets", [])


def connect_headset(phone: PhoneProcess, bluealsa: Bluealsa, transport: str = "HFP") -> Headset:
    """The headset connects, the phone takes its channel, the SLC completes: service 1."""
    headset = bluealsa.connect(ADDRESS, transport)
    wait(lambda: any(h["address"] == ADDRESS for h in headset_status(phone)), 5, "the phone to hold the channel", phone)
    headset.wait_forwarded()
    if transport == "HFP":
        headset.slc()
        headset.expect("+CIEV: 1,1")
    return headset


def ring(phone: PhoneProcess, headset: Headset, caller, kamailio) -> None:
    caller.dial(kamailio.uri("1000"))
    phone.wait_state("ringing")
    lines = headset.expect("RING")
    assert "+CIEV: 3,1" in lines


def answer_from_headset(phone: PhoneProcess, headset: Headset, caller, kamailio) -> None:
    headset.send("ATA")
    assert headset.expect("+CIEV: 3,0")[-3:] == ["OK", "+CIEV: 2,1", "+CIEV: 3,0"]
    ok = kamailio.wait_for(lambda m: m.source == phone.source and m.method == "INVITE" and m.status == 200)
    assert ok.kind == "reply"
    caller.wait_event("CALL_ESTABLISHED")
    phone.wait_state("in_call")


def test_the_headsets_answer_button_answers_and_its_hangup_sends_bye(hfp_phone, bluealsa, baresip_factory, kamailio):
    phone = hfp_phone()
    headset = connect_headset(phone, bluealsa)
    caller = baresip_factory("1001")
    ring(phone, headset, caller, kamailio)
    answer_from_headset(phone, headset, caller, kamailio)
    headset.send("AT+CHUP")
    assert headset.expect("+CIEV: 2,0") == ["OK", "+CIEV: 2,0"]
    kamailio.wait_for(lambda m: m.source == phone.source and m.method == "BYE" and m.kind == "request")
    caller.wait_event("CALL_CLOSED")
    phone.wait_state("idle")


def test_a_ringing_call_rejected_from_the_headset(hfp_phone, bluealsa, baresip_factory, kamailio):
    phone = hfp_phone()
    headset = connect_headset(phone, bluealsa)
    caller = baresip_factory("1001")
    ring(phone, headset, caller, kamailio)
    headset.send("AT+CHUP")
    lines = headset.expect("+CIEV: 3,0")
    assert "OK" in lines and "+CIEV: 2,1" not in lines
    refusal = kamailio.wait_for(
        lambda m: m.source == phone.source and m.method == "INVITE" and m.kind == "reply" and m.status >= 400
    )
    assert refusal.status in (486, 603)
    caller.wait_event("CALL_CLOSED")
    phone.wait_state("idle")


def test_the_far_end_hanging_up_clears_the_headsets_call(hfp_phone, bluealsa, baresip_factory, kamailio):
    phone = hfp_phone()
    headset = connect_headset(phone, bluealsa)
    caller = baresip_factory("1001")
    ring(phone, headset, caller, kamailio)
    answer_from_headset(phone, headset, caller, kamailio)
    caller.hangup()
    assert headset.expect("+CIEV: 2,0") == ["+CIEV: 2,0"]
    phone.wait_state("idle")


def test_a_mapped_headset_gesture_blind_transfers(hfp_phone, bluealsa, baresip_factory, sipp_target_factory, kamailio):
    mapping = '\n[buttons.controls.voice_dial.in_call]\nsingle = "transfer:desk"\n'
    phone = hfp_phone(TRANSFER_CONFIG + mapping)
    headset = connect_headset(phone, bluealsa)
    caller = baresip_factory("1001")
    sipp_target_factory("1003", "answer")
    ring(phone, headset, caller, kamailio)
    answer_from_headset(phone, headset, caller, kamailio)
    call_id = phone.status()["calls"][0]["sip_call_id"]
    headset.send("AT+BVRA=1")  # the voice-dial gesture, mapped to a transfer in a call
    headset.expect("OK")
    phone.wait_event(lambda e: e["event"] == "transfer" and e["state"] == "succeeded")
    assert_seed_ladder(kamailio, phone, caller, call_id, "1003")
    headset.expect("+CIEV: 2,0")  # the call was transferred away: the headset's call is over
    phone.wait_state("idle")


def test_call_audio_goes_to_the_headset_and_back_to_the_wired_device_when_it_leaves(
    phone_factory, bluealsa, bt_pulse, baresip_factory, kamailio
):
    bt_pulse.reset()
    env = {**bt_pulse.env, "DBUS_SYSTEM_BUS_ADDRESS": bluealsa.bus_address}
    phone = phone_factory(extra=AUDIO + HFP, env=env).start()
    headset = connect_headset(phone, bluealsa)
    caller = baresip_factory("1001")
    ring(phone, headset, caller, kamailio)
    answer_from_headset(phone, headset, caller, kamailio)
    wait(lambda: bt_pulse.streams("bt_out") and bt_pulse.recordings("bt_in"), 5, "the call's audio on the headset", phone)
    wait(lambda: not bt_pulse.streams("headset_out"), 5, "the wired headset released", phone)
    assert phone.status()["engine"]["sound"] == "alsa (bluetooth_headset / bluetooth_headset)"

    headset.close()  # the headset walks away mid-call
    wait(lambda: bt_pulse.streams("headset_out") and bt_pulse.recordings("headset_in"), 5, "the call on the wired headset", phone)
    wait(lambda: not bt_pulse.streams("bt_out"), 5, "the headset's PCM closed", phone)
    assert phone.status()["state"] == "in_call"
    assert not [m for m in kamailio.ladder() if m.source == phone.source and m.method == "BYE"]
    caller.hangup()
    phone.wait_state("idle")
