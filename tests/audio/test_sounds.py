"""The ring tone and the audible cues, heard where they should be: the streams PulseAudio has open on each
device, and what its sink monitors recorded (the notes of the shipped sounds, found with Goertzel)."""

from __future__ import annotations

from tests.audio.conftest import Recorder
from tests.phone_process import wait

C5, E5, A5 = 523.25, 659.26, 880.0  # the ring's first note, the failed transfer's first, the beeps
RING_ON_SPEAKER = '[sounds]\nring_device = "Speaker"\n[transfer.targets.busy]\nuri = "1004"\n'


def sounds(phone, name):
    return [(e["state"], e["device"]) for e in list(phone.events) if e["event"] == "sound" and e["sound"] == name]


def wait_sound(phone, name, state, count=1):
    def found():
        matching = [e for e in list(phone.events) if e["event"] == "sound" and e["sound"] == name and e["state"] == state]
        return matching[count - 1] if len(matching) >= count else None

    return wait(found, 10, f"sound {name} {state} #{count}", phone)


def ring(phone, caller):
    caller.dial(phone.kamailio.uri(phone.user))
    phone.wait_state("ringing")


def test_ring_on_a_speaker_stops_when_the_caller_gives_up_and_when_answered(audio_phone, baresip_factory, pulse):
    phone = audio_phone('[sounds]\nring_device = "desk speaker"\n').start()  # by its description, as devices are
    assert phone.status()["audio"]["ring_device"] == "Speaker"
    caller = baresip_factory("1001")

    ring(phone, caller)
    [stream] = wait(lambda: pulse.streams("speaker_out"), 5, "the ring tone on the speaker", phone)
    assert stream["sample_specification"] == "s16le 1ch 16000Hz"  # the shipped ring.wav, by pyalsaaudio
    assert phone.status()["audio"]["ringing"] is True
    assert wait_sound(phone, "ring", "started")["call_id"] == phone.status()["calls"][0]["id"]
    caller.hangup()  # CANCEL
    wait_sound(phone, "ring", "stopped")
    wait(lambda: not pulse.streams("speaker_out"), 2, "the ring tone to stop", phone)
    phone.wait_state("idle")

    ring(phone, caller)
    wait(lambda: pulse.streams("speaker_out"), 5, "the ring tone on the speaker", phone)
    phone.cli("answer")
    wait_sound(phone, "ring", "stopped", 2)
    wait(lambda: not pulse.streams("speaker_out"), 2, "the ring tone to stop", phone)
    caller.wait_event("CALL_ESTABLISHED")
    assert sounds(phone, "ring") == [("started", "Speaker"), ("stopped", "Speaker")] * 2
    assert phone.status()["audio"]["ringing"] is False
    assert pulse.streams("headset_out"), "the call itself is on the headset"
    caller.hangup()
    phone.wait_state("idle")


def test_ring_beeps_and_a_failed_transfer_are_heard_on_the_headset(
    audio_phone, baresip_factory, sipp_target_factory, pulse, kamailio, tmp_path
):
    phone = audio_phone('[calls]\ncall_waiting = false\n[transfer.targets.busy]\nuri = "1004"\n').start()  # no ring_device: the headset
    recorder = Recorder(pulse, "headset_out", tmp_path / "headset.raw")
    caller = baresip_factory("1001")

    # The ring, through PJSUA2 (it opens the headset for it), until the call is rejected.
    ring(phone, caller)
    assert wait_sound(phone, "ring", "started")["device"] == "headset"
    recorder.wait_heard(C5)
    phone.cli("reject")
    wait_sound(phone, "ring", "stopped")
    caller.wait_event("CALL_CLOSED")
    assert not pulse.streams("speaker_out")

    # In a call, a second caller is refused busy and heard as two beeps (over the far end's 440 Hz tone).
    ring(phone, caller)
    phone.cli("answer")
    caller.wait_event("CALL_ESTABLISHED")
    recorder.wait_more(0.3)  # the call's audio reaches the recording: it listens from here on
    second = baresip_factory("1002")
    second.dial(kamailio.uri("1000"))
    second.wait_event("CALL_CLOSED")
    assert phone.wait_event(lambda e: e["event"] == "call_waiting")["code"] == 486
    recorder.wait_heard(A5)
    wait_sound(phone, "call_waiting", "stopped")
    assert sounds(phone, "ring") == [("started", "headset"), ("stopped", "headset")] * 2  # not for the second

    # A transfer to a busy target fails: the caller is back, and a falling pair of notes says so.
    sipp_target_factory("1004", "busy")
    result = phone.cli("transfer", "busy", check=False)
    assert result.returncode == 1 and "486" in result.stderr
    recorder.wait_heard(E5)
    wait_sound(phone, "transfer_failed", "stopped")
    recorder.stop()
    assert sounds(phone, "call_waiting") == [("started", "headset"), ("stopped", "headset")]
    assert sounds(phone, "transfer_failed") == [("started", "headset"), ("stopped", "headset")]
    assert phone.status()["state"] == "in_call"
    caller.hangup()
    phone.wait_state("idle")
