"""Choosing the call's sound devices by name, with the real alsa-lib and PJSUA2's ALSA backend (PulseAudio
devices, see conftest), observed from outside the phone: the streams PulseAudio sees open and their rate."""

from __future__ import annotations

import subprocess

from firmware_app.alsa import Card, Pcm, choose
from tests.audio.conftest import HEADSET_DESCRIPTION
from tests.phone_process import FIRMWARE_APP, wait


def answered_call(phone, baresip_factory):
    caller = baresip_factory("1001")
    caller.dial(phone.kamailio.uri(phone.user))
    phone.wait_state("ringing")
    phone.cli("answer")
    caller.wait_event("CALL_ESTABLISHED")
    phone.wait_state("in_call")
    return caller


def test_devices_named_exactly_carry_the_call_at_the_configured_clock_and_latency(audio_phone, baresip_factory, pulse):
    phone = audio_phone(
        '[audio]\ncapture_device = "Headset"\nplayback_device = "Headset"\nsnd_clock_rate = 48000\n'
        "playback_latency_ms = 60\n"
    ).start()
    assert phone.status()["engine"]["sound"] == "alsa (Headset / Headset)"
    # The device was opened once at start (a broken one fails there), and closed again while idle.
    wait(lambda: not pulse.streams("headset_out"), 5, "the headset to be closed while idle", phone)

    caller = answered_call(phone, baresip_factory)
    [playback] = wait(lambda: pulse.streams("headset_out"), 5, "the call's audio on the headset", phone)
    [capture] = wait(lambda: pulse.recordings("headset_in"), 5, "the headset's microphone in use", phone)
    assert playback["sample_specification"] == "s16le 1ch 48000Hz"  # snd_clock_rate reached PJSUA2
    assert capture["sample_specification"] == "s16le 1ch 48000Hz"
    # PJSIP asks ALSA for a buffer of playback_latency_ms; PulseAudio reports it as the stream's latency.
    assert 40_000 <= playback["buffer_latency_usec"] <= 80_000, playback["buffer_latency_usec"]
    assert not pulse.streams("speaker_out")

    caller.hangup()
    phone.wait_state("idle")


def test_devices_chosen_by_part_of_their_description(audio_phone, baresip_factory, pulse):
    phone = audio_phone('[audio]\ncapture_device = "jabra"\nplayback_device = "desk speak"\n').start()
    assert phone.status()["engine"]["sound"] == "alsa (Headset / Speaker)"
    caller = answered_call(phone, baresip_factory)
    [stream] = wait(lambda: pulse.streams("speaker_out"), 5, "the call's audio on the speaker", phone)
    assert stream["sample_specification"] == "s16le 1ch 16000Hz"  # the default clock, 16 kHz
    assert not pulse.streams("headset_out")
    assert pulse.recordings("headset_in")
    caller.hangup()
    phone.wait_state("idle")


def test_a_device_that_is_not_there_is_one_clear_error_listing_those_that_are(audio_phone, pulse):
    phone = audio_phone('[audio]\ncapture_device = "Headset"\nplayback_device = "Plantronics"\n')
    result = subprocess.run(
        [*FIRMWARE_APP, "-c", str(phone.config), "run"], env=pulse.env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "Plantronics" in line]
    assert len(errors) == 1, result.stderr
    assert "audio.playback_device: no playback device matches 'Plantronics'" in errors[0]
    assert "(playback devices here: default, pulse, Headset, Speaker)" in errors[0]
    assert str(phone.config) in errors[0]


def test_without_a_usable_default_device_calls_use_the_null_device_and_say_so_once(phone_factory, tmp_path, pulse):
    # No PulseAudio for this phone: ALSA's default (the pulse plugin) cannot be opened, nothing else exists.
    env = {**pulse.env, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path), "PULSE_SERVER": "unix:/nonexistent"}
    phone = phone_factory(env=env).start()
    assert phone.status()["engine"]["sound"] == "null"
    assert phone.log().count("calls use the null audio device") == 1
    # No mixer either: the volume actions say why they cannot be done.
    result = phone.cli("action", "volume_up", check=False)
    assert result.returncode == 1 and "no mixer: mixer 'default':" in result.stderr
    assert phone.status()["audio"]["mixer"] is None


# --- the choice itself, on the names of a Raspberry Pi with a USB headset ----------------------------------

PI_DEVICES = [
    ("default", 1, 1),
    ("hw:CARD=Headphones,DEV=0", 0, 1),
    ("plughw:CARD=Headphones,DEV=0", 0, 1),
    ("sysdefault:CARD=Headphones", 0, 1),
    ("hw:CARD=MS,DEV=0", 1, 1),
    ("plughw:CARD=MS,DEV=0", 1, 1),
    ("default:CARD=MS", 1, 1),
    ("sysdefault:CARD=MS", 1, 1),
    ("front:CARD=MS,DEV=0", 0, 1),
    ("dmix:CARD=MS,DEV=0", 0, 1),
    ("dsnoop:CARD=MS,DEV=0", 1, 0),
]
PI_CARDS = [Card(0, "Headphones", "bcm2835 Headphones", "bcm2835 Headphones"), Card(1, "MS", "Jabra EVOLVE 20 MS", "GN Netcom A/S Jabra EVOLVE 20 MS at usb-3f980000.usb-1.3, full speed")]


def names(wanted, capture=False, **kw):
    index = choose(PI_DEVICES, wanted, capture=capture, cards=PI_CARDS, **kw)
    return None if index is None else PI_DEVICES[index][0]


def test_an_exact_alsa_name_is_taken_as_it_is():
    assert names("plughw:CARD=MS,DEV=0") == "plughw:CARD=MS,DEV=0"
    assert names("hw:CARD=MS,DEV=0", capture=True) == "hw:CARD=MS,DEV=0"
    assert names("DEFAULT") == "default"


def test_a_part_of_a_card_name_prefers_the_shared_converting_device_of_that_card():
    assert names("jabra") == "default:CARD=MS"
    assert names("Jabra EVOLVE", capture=True) == "default:CARD=MS"
    assert names("headphones") == "sysdefault:CARD=Headphones"
    assert names("headphones", capture=True) is None  # it has no microphone


def test_a_part_of_a_description_counts_too():
    pcms = [Pcm("Headset", HEADSET_DESCRIPTION, "")]
    assert choose([("default", 1, 1), ("Headset", 1, 1)], "evolve 20", capture=True, pcms=pcms) == 1
    assert choose([("default", 1, 1), ("Headset", 1, 1)], "plantronics", capture=True, pcms=pcms) is None
