"""Volume, mute and microphone mute, on a real ALSA mixer (PulseAudio's, through alsa-lib's pulse control
plugin and pyalsaaudio), observed with pactl; the microphone mute also as the far end heard it."""

from __future__ import annotations

import json
import time

from tests.audio.conftest import tone_levels, wav_samples
from tests.phone_process import wait

MIXER = "[mixer]\nstep = 30\nmin_volume = 20\nmax_volume = 90\n"


def action(phone, name):
    return json.loads(phone.cli("action", name).stdout)


def test_volume_steps_stop_at_the_limits_and_the_last_volume_survives_a_restart(audio_phone, pulse, tmp_path):
    phone = audio_phone(MIXER).start()
    assert phone.status()["audio"]["mixer"] == "Headset Master / Capture"
    assert phone.status()["audio"]["volume"] == 100  # the mixer's own, until a button changes it

    levels = [action(phone, "volume_down") for _ in range(4)]
    assert [(r["level"], r["at_limit"]) for r in levels] == [(70, False), (40, False), (20, True), (20, True)]
    assert pulse.sink_volume("headset_out") == 20
    levels = [action(phone, "volume_up") for _ in range(4)]
    assert [(r["level"], r["at_limit"]) for r in levels] == [(50, False), (80, False), (90, True), (90, True)]
    assert pulse.sink_volume("headset_out") == 90
    assert action(phone, "volume_down:5")["level"] == 85
    assert pulse.sink_volume("headset_out") == 85
    volume_events = [(e["level"], e["at_limit"]) for e in phone.events if e["event"] == "volume"]
    assert volume_events[-3:] == [(90, True), (90, True), (85, False)]

    assert action(phone, "mute_toggle")["muted"] is True
    assert pulse.sink_muted("headset_out")
    assert action(phone, "mute_toggle")["muted"] is False
    assert not pulse.sink_muted("headset_out")
    audio = phone.status()["audio"]
    assert (audio["volume"], audio["muted"], audio["mixer_error"]) == (85, False, None)

    phone.stop()
    assert json.loads((tmp_path / "phone" / "audio.json").read_text()) == {"volume": 85}
    pulse.pactl("set-sink-volume", "headset_out", "100%")  # changed while the phone was off
    phone.start()
    assert pulse.sink_volume("headset_out") == 85
    assert phone.status()["audio"]["volume"] == 85


def answer(phone, caller):
    caller.dial(phone.kamailio.uri(phone.user))
    phone.wait_state("ringing")
    phone.cli("answer")
    caller.wait_event("CALL_ESTABLISHED")
    phone.wait_state("in_call")
    return phone.status()["calls"][0]["id"]


def test_mic_mute_is_the_headsets_and_every_calls_and_the_far_end_hears_nothing(audio_phone, baresip_factory, pulse):
    phone = audio_phone().start()
    # With no call, it is the headset's microphone: the mixer's capture switch.
    assert action(phone, "mic_mute_toggle") == {"mic_muted": True, "mixer": True, "calls": []}
    assert pulse.source_muted("headset_in")
    assert phone.status()["audio"]["mic_muted"] is True
    assert action(phone, "mic_mute_toggle") == {"mic_muted": False, "mixer": True, "calls": []}
    assert not pulse.source_muted("headset_in")

    # In a call, it is also what the call sends (the microphone is a 440 Hz sine).
    caller = baresip_factory("1001")
    caller.command("insmod", "sndfile")  # baresip records what it receives: dump-*-dec.wav in its folder
    call_id = answer(phone, caller)
    time.sleep(0.6)  # the far end hears the microphone for a while
    assert action(phone, "mic_mute_toggle") == {"mic_muted": True, "mixer": True, "calls": [call_id]}
    assert phone.wait_event(lambda e: e["event"] == "call" and e["mic_muted"] and e["id"] == call_id)
    muted = phone.wait_event(lambda e: e["event"] == "mic_mute" and e["muted"] and e["calls"] == [call_id])
    active = phone.wait_event(lambda e: e["event"] == "call" and e["state"] == "active" and e["id"] == call_id)
    assert phone.status()["calls"][0]["mic_muted"] is True
    # The headset's switch back on behind the phone's back: only PJSUA2's transmit level mutes the call now.
    pulse.pactl("set-source-mute", "headset_in", "0")
    time.sleep(1.2)
    caller.hangup()
    phone.wait_state("idle")
    [recording] = wait(lambda: list(caller.workdir.glob("dump-*-dec.wav")), 5, "baresip's recording", phone)
    samples, rate = wav_samples(recording)
    loud = sum(0.1 for level in tone_levels(samples, 440.0, rate, window=0.1) if level > 1000)
    # PJSIP stops sending RTP while what it sends is silent (VAD), so silence may be missing from the
    # recording rather than in it: count how long the tone was heard. It was on from the answer to the
    # mute; 1.2 s more if the mute did not reach PJSUA2.
    unmuted = muted["time"] - active["time"]
    assert 0.5 < loud < unmuted + 0.5, f"the far end heard the microphone for {loud:.1f} s, {unmuted:.1f} s expected"

    # Still muted: the next call starts muted, and unmuting it unmutes the headset too.
    call_id = answer(phone, caller)
    wait(lambda: phone.status()["calls"][0]["mic_muted"], 5, "the new call to start muted", phone)
    assert action(phone, "mic_mute_toggle") == {"mic_muted": False, "mixer": True, "calls": [call_id]}
    assert phone.status()["calls"][0]["mic_muted"] is False
    assert not pulse.source_muted("headset_in")
    caller.hangup()
    phone.wait_state("idle")
