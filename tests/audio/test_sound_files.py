"""The shipped sounds and the audio plugin's configuration checks (no sound device needed)."""

from __future__ import annotations

import array
import subprocess
import wave
from pathlib import Path

import pytest

from softphone_audio import SOUNDS, tones
from softphone_audio.player import Sound
from tests.audio.conftest import tone_levels
from tests.phone_process import FIRMWARE_APP


def test_the_shipped_sounds_are_what_tones_makes(tmp_path, monkeypatch):
    monkeypatch.setattr(tones, "SOUNDS", tmp_path)
    tones.main()
    for name in ("ring", "call_waiting", "transfer_failed"):
        assert (tmp_path / f"{name}.wav").read_bytes() == (SOUNDS / f"{name}.wav").read_bytes(), name


@pytest.mark.parametrize(("name", "freq", "seconds"), [("ring", 523.25, 3.0), ("call_waiting", 880.0, 0.5), ("transfer_failed", 659.26, 0.6)])
def test_each_sound_is_a_small_16_bit_mono_wav_with_its_note(name, freq, seconds):
    sound = Sound.load(SOUNDS / f"{name}.wav")
    assert (sound.rate, sound.channels, round(sound.duration, 2)) == (16000, 1, seconds)
    samples = sound.converted(8000, 1)
    levels = tone_levels(array.array("h", samples), freq, 8000)
    assert max(levels) > 2000, "the sound's first note is in it"
    assert max(abs(s) for s in array.array("h", sound.data)) < 0.6 * 32768, "headroom: no clipping at full volume"


def test_conversion_keeps_the_length_and_doubles_channels():
    sound = Sound.load(SOUNDS / "call_waiting.wav")
    stereo_48k = sound.converted(48000, 2)
    assert len(stereo_48k) == len(sound.data) * 3 * 2


def test_a_sound_file_that_is_not_16_bit_pcm_is_refused(tmp_path):
    path = tmp_path / "8bit.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(b"\x80" * 800)
    with pytest.raises(ValueError, match="expected a 16-bit PCM WAV file"):
        Sound.load(path)
    with pytest.raises(ValueError, match="file not found"):
        Sound.load(tmp_path / "missing.wav")


def check_config(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text(f'[account]\nregistrar = "pbx.example"\nuser = "1000"\n\n{body}')
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('password = "x"\n')
    secrets.chmod(0o600)
    return subprocess.run([*FIRMWARE_APP, "check-config", str(config)], capture_output=True, text=True, timeout=30)


def test_the_audio_tables_are_checked_by_check_config(tmp_path):
    ok = check_config(tmp_path, '[mixer]\nstep = 10\n[sounds]\nring_device = "Speaker"\n')
    assert ok.returncode == 0, ok.stderr
    assert "softphone_audio" in ok.stdout

    bad_file = check_config(tmp_path, '[sounds]\nring_file = "bell.wav"\n')
    assert bad_file.returncode == 2
    assert f"config.toml: sounds.ring_file: {tmp_path / 'bell.wav'}: file not found" in bad_file.stderr

    limits = check_config(tmp_path, "[mixer]\nmin_volume = 80\nmax_volume = 50\n")
    assert limits.returncode == 2
    assert "mixer.min_volume: expected at most max_volume (50), got 80" in limits.stderr

    typo = check_config(tmp_path, "[mixer]\nstep_size = 10\n")
    assert typo.returncode == 2 and "mixer.step_size: unknown key" in typo.stderr
