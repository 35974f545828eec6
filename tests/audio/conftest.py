"""A real, clocked ALSA setup without a sound card: a PulseAudio daemon of the tests' own, seen through the
ALSA ``pulse`` plugin as named PCMs and mixers (an ``.asoundrc`` in the phone's ``$HOME``).

* ``Headset``: playback into the null sink ``headset_out``, capture from ``headset_in``, a 440 Hz sine
  source (so what the far end hears shows whether the microphone is muted); mixer ``Master``/``Capture``.
* ``Speaker``: playback into the null sink ``speaker_out`` (a speaker beside the headset, for the ring).

Both are listed by alsa-lib, opened by PJSUA2's ALSA backend and by pyalsaaudio, and clocked by PulseAudio,
unlike ALSA's bare ``null`` PCM (PJSIP's audio thread spins on that). What plays is observed from outside
the phone with ``pactl``: the streams on each sink, their sample rate, volumes and mutes.
"""

from __future__ import annotations

import array
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import wave
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.phone_process import PhoneProcess

HEADSET_DESCRIPTION = "Jabra EVOLVE 20 MS test headset"

ASOUNDRC = f"""\
pcm.Headset {{
    type asym
    playback.pcm {{ type pulse; device headset_out }}
    capture.pcm {{ type pulse; device headset_in }}
    hint {{ show on; description "{HEADSET_DESCRIPTION}" }}
}}
ctl.Headset {{ type pulse; sink headset_out; source headset_in }}
pcm.Speaker {{ type pulse; device speaker_out; hint {{ show on; description "Desk Speaker" }} }}
ctl.Speaker {{ type pulse; device speaker_out }}
"""

DEFAULT_PA = """\
load-module module-native-protocol-unix auth-anonymous=1
load-module module-null-sink sink_name=headset_out
load-module module-sine-source source_name=headset_in frequency=440
load-module module-null-sink sink_name=speaker_out
"""


class PulseAudio:
    """The daemon, and what the tests read from it with pactl."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.runtime = root / "run"
        self.home.mkdir(parents=True)
        self.runtime.mkdir(mode=0o700)
        (self.home / ".asoundrc").write_text(ASOUNDRC)
        (root / "default.pa").write_text(DEFAULT_PA)
        self.env = {
            **os.environ,
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "PULSE_SERVER": f"unix:{self.runtime}/pulse/native",
        }
        self.env.pop("ALSA_CONFIG_PATH", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("pulseaudio")
        if binary is None:
            pytest.fail("pulseaudio is not installed (tests/setup.sh installs it)", pytrace=False)
        log = (self.root / "pulseaudio.log").open("ab")
        self.process = subprocess.Popen(
            [binary, "-n", "-F", str(self.root / "default.pa"), "--daemonize=no", "--exit-idle-time=-1",
             "--use-pid-file=no", "--log-target=stderr"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.root,
        )
        deadline = time.monotonic() + timeout
        while subprocess.run(["pactl", "info"], env=self.env, capture_output=True).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"PulseAudio did not start:\n{(self.root / 'pulseaudio.log').read_text()}", pytrace=False)
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def pactl(self, *args: str) -> str:
        result = subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10)
        if result.returncode != 0:
            raise AssertionError(f"pactl {' '.join(args)}: {result.stderr}")
        return result.stdout

    def reset(self) -> None:
        self.pactl("set-sink-volume", "headset_out", "100%")
        self.pactl("set-sink-mute", "headset_out", "0")
        self.pactl("set-source-mute", "headset_in", "0")
        self.pactl("set-source-volume", "headset_in", "100%")

    def streams(self, sink: str) -> list[dict[str, Any]]:
        """The playback streams on a sink now (``pactl list sink-inputs``)."""
        sinks = {s["index"]: s["name"] for s in json.loads(self.pactl("-f", "json", "list", "short", "sinks"))}
        inputs = json.loads(self.pactl("-f", "json", "list", "sink-inputs"))
        return [i for i in inputs if sinks.get(i["sink"]) == sink]

    def recordings(self, source: str) -> list[dict[str, Any]]:
        sources = {s["index"]: s["name"] for s in json.loads(self.pactl("-f", "json", "list", "short", "sources"))}
        outputs = json.loads(self.pactl("-f", "json", "list", "source-outputs"))
        return [o for o in outputs if sources.get(o["source"]) == source]

    def sink_volume(self, sink: str) -> int:
        """The sink's volume in percent, as pactl rounds it."""
        line = self.pactl("get-sink-volume", sink).split("\n", 1)[0]
        percents = [int(p) for p in re.findall(r"(\d+)%", line)]
        return round(sum(percents) / len(percents))

    def sink_muted(self, sink: str) -> bool:
        return self.pactl("get-sink-mute", sink).strip().endswith("yes")

    def source_muted(self, source: str) -> bool:
        return self.pactl("get-source-mute", source).strip().endswith("yes")


@pytest.fixture(scope="session")
def pulse_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseAudio]:
    daemon = PulseAudio(tmp_path_factory.mktemp("pulse"))
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def pulse(pulse_daemon: PulseAudio) -> PulseAudio:
    """The session's PulseAudio, with full volume and nothing muted."""
    pulse_daemon.reset()
    return pulse_daemon


AUDIO = """\
[audio]
capture_device = "Headset"
playback_device = "Headset"
"""


@pytest.fixture
def audio_phone(phone_factory: Any, pulse: PulseAudio, tmp_path: Path) -> Any:
    """make(extra="", name="phone", **kw) -> a PhoneProcess that sees the PulseAudio devices (not started).

    ``extra`` is appended to the configuration; without an ``[audio]`` table the phone uses ``Headset``.
    Its audio state file is in the test's folder.
    """

    def make(extra: str = "", name: str = "phone", **kw: Any) -> PhoneProcess:
        body = extra if "[audio]" in extra else AUDIO + extra
        state = f'state_file = "{tmp_path / name / "audio.json"}"\n'
        if "[mixer]" not in body:
            body += f"\n[mixer]\n{state}"
        elif "state_file" not in body:
            body = body.replace("[mixer]\n", f"[mixer]\n{state}", 1)
        return phone_factory(name, extra=body, env=pulse.env, **kw)

    return make


# --- listening to what was played --------------------------------------------------------------------------


class Recorder:
    """Records a sink's monitor with parec (8 kHz mono) until stopped: what a person would have heard."""

    RATE = 8000

    def __init__(self, pulse: PulseAudio, sink: str, path: Path) -> None:
        self.path = path
        self._file = path.open("wb")
        self._process = subprocess.Popen(
            ["parec", "-d", f"{sink}.monitor", "--raw", "--format=s16le", f"--rate={self.RATE}", "--channels=1",
             "--latency-msec=20"],
            stdout=self._file, stderr=path.with_suffix(".log").open("wb"), env=pulse.env,
        )

    def seconds(self) -> float:
        return self.path.stat().st_size / (2 * self.RATE)

    def wait_more(self, seconds: float, timeout: float = 10.0) -> None:
        """Wait until ``seconds`` more are recorded: PulseAudio hands a monitor's audio over in blocks, a
        second or two behind when the recording or its sink has just started."""
        target = self.seconds() + seconds
        deadline = time.monotonic() + timeout
        while self.seconds() < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.seconds():.2f} s recorded from the monitor, {target:.2f} s expected")
            time.sleep(0.02)

    def samples(self) -> array.array:
        samples = array.array("h", self.path.read_bytes()[: self.path.stat().st_size // 2 * 2])
        if sys.byteorder == "big":
            samples.byteswap()
        return samples

    def heard(self, freq: float) -> bool:
        return heard(self.samples(), freq)

    def wait_heard(self, freq: float, timeout: float = 5.0) -> None:
        """Wait until ``freq`` was heard (what was played shows up in the recording a while later)."""
        deadline = time.monotonic() + timeout
        while not self.heard(freq):
            if time.monotonic() > deadline:
                raise AssertionError(f"{freq} Hz was not heard in {len(self.samples()) / self.RATE:.2f} s recorded")
            time.sleep(0.1)

    def stop(self) -> array.array:
        self._process.terminate()
        self._process.wait(5)
        self._file.close()
        return self.samples()


def tone_levels(samples: Sequence[int], freq: float, rate: int = Recorder.RATE, window: float = 0.05) -> list[float]:
    """The amplitude of ``freq`` in each window (Goertzel), 0..32768: how loud that tone was, window by window."""
    n = int(rate * window)
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    levels = []
    for start in range(0, len(samples) - n + 1, n):
        s1 = s2 = 0.0
        for x in samples[start : start + n]:
            s1, s2 = x + coeff * s1 - s2, s1
        power = s1 * s1 + s2 * s2 - coeff * s1 * s2
        levels.append(2 * math.sqrt(max(power, 0.0)) / n)
    return levels


def heard(samples: Sequence[int], freq: float) -> bool:
    """Whether ``freq`` was loud somewhere: above 1/20 of full scale, and well above 300 Hz (where none of
    the phone's sounds, nor the far end's 440 Hz, has anything) in the same 50 ms."""
    tone, other = tone_levels(samples, freq), tone_levels(samples, 300.0)
    return any(t > 1600 and t > 5 * o for t, o in zip(tone, other))


def wav_samples(path: Path) -> tuple[array.array, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, (w.getsampwidth(), w.getnchannels())
        samples = array.array("h", w.readframes(w.getnframes()))
        rate = w.getframerate()
    if sys.byteorder == "big":
        samples.byteswap()
    return samples, rate
