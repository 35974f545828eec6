"""``firmware-app doctor`` with no phone running: the real alsa-lib (PulseAudio's devices), the real PJSUA2
build, and the test Kamailio as the registrar (its ladder shows the doctor's OPTIONS)."""

from __future__ import annotations

import json
import re
import subprocess

from tests.peers.support import free_port
from tests.phone_process import FIRMWARE_APP


def doctor(pulse, config_path, *args):
    return subprocess.run(
        [*FIRMWARE_APP, "-c", str(config_path), "doctor", *args], env=pulse.env, capture_output=True, text=True, timeout=30
    )


def write_config(tmp_path, registrar, body):
    path = tmp_path / "config.toml"
    path.write_text(f'[account]\nregistrar = "{registrar}"\nuser = "1000"\n\n{body}')
    return path


GOOD = """\
[audio]
capture_device = "Headset"
playback_device = "jabra"
[mixer]
step = 10
[sounds]
ring_device = "Speaker"
"""


def test_doctor_reports_sound_devices_the_pjsua2_build_and_the_registrar(pulse, kamailio, tmp_path):
    config = write_config(tmp_path, kamailio.domain, GOOD)
    text = doctor(pulse, config)
    assert text.returncode == 0, text.stdout + text.stderr
    out = text.stdout
    assert "PJSUA2      2.17, sound backend: ALSA" in out
    assert re.search(r"\n {12}Headset +Jabra EVOLVE 20 MS test headset\n", out)
    assert "Master (playback volume, playback switch), Capture (capture volume, capture switch)" in out
    assert "playback_device 'jabra' -> Headset  OK" in out
    assert "mixer           '' -> Headset Master / Capture  OK" in out
    assert "ring_device     'Speaker' -> Speaker  OK" in out
    assert f"registrar   {kamailio.domain}, SIP OPTIONS over UDP: answers (200 OK" in out
    assert out.rstrip().endswith("result      OK")

    report = json.loads(doctor(pulse, config, "--json").stdout)
    assert report["ok"] is True and report["problems"] == []
    assert report["pjsua2"]["version"] == "2.17" and report["pjsua2"]["sound_backends"] == ["ALSA"]
    assert {"name": "Speaker", "description": "Desk Speaker", "io": ""} in report["alsa"]["pcms"]
    assert report["configured"]["capture_device"] == {"configured": "Headset", "found": True, "device": "Headset"}
    assert report["configured"]["mixer"]["playback_control"] == "Master"
    assert report["registrar"]["status"] == "200 OK"
    options = [m for m in kamailio.ladder() if m.method == "OPTIONS" and m.is_request]
    assert options, "the registrar never saw the doctor's OPTIONS"


def test_doctor_names_what_is_missing_and_what_there_is(pulse, tmp_path):
    closed = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        closed,
        '[audio]\ncapture_device = "Plantronics"\n[mixer]\nplayback_control = "Treble"\n[sounds]\nring_device = "Tannoy"\n',
    )
    result = doctor(pulse, config, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["problems"] == [
        "audio.capture_device: no capture device matches 'Plantronics' (capture devices here: default, pulse, Headset, Speaker)",
        "mixer: mixer control 'Treble' is not on 'default' (controls there: Master, Capture)",
        "sounds.ring_device: no ALSA PCM matches 'Tannoy' (PCMs here: default, pulse, Headset, Speaker)",
        f"registrar {closed}: no SIP answer (Connection refused)",
    ]
    text = doctor(pulse, config).stdout
    assert "capture_device  'Plantronics'  NOT FOUND" in text
    assert "result      4 problem(s):" in text


def test_doctor_says_so_when_the_configuration_is_broken(pulse, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[account]\nuser = "1000"\n')
    result = doctor(pulse, path)
    assert result.returncode == 1
    assert "account.registrar: is required" in result.stdout
    assert "PJSUA2      2.17, sound backend: ALSA" in result.stdout  # the rest is still checked
