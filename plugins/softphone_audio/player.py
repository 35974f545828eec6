"""WAV sounds, and a player for an ALSA device other than the calls' one (pyalsaaudio in its own thread).

PJSUA2 has one sound device, the headset's. A ring tone on a speaker beside it is played here instead: a
thread writes the file to that PCM without blocking, a period at a time, and checks for a stop request in
between, so a stop drops what is buffered at once. Nothing here touches PJSUA2.
"""

from __future__ import annotations

import array
import logging
import sys
import threading
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("softphone_audio")

PERIOD_MS = 20


@dataclass(frozen=True)
class Sound:
    """A 16-bit PCM WAV file, read once."""

    path: Path
    rate: int
    channels: int
    data: bytes  # little-endian 16-bit samples, interleaved

    @classmethod
    def load(cls, path: Path) -> Sound:
        """Read ``path``; ValueError says what is wrong with it."""
        try:
            with wave.open(str(path), "rb") as w:
                if w.getsampwidth() != 2 or w.getcomptype() != "NONE":
                    raise ValueError("expected a 16-bit PCM WAV file")
                if w.getnchannels() not in (1, 2):
                    raise ValueError(f"expected mono or stereo, got {w.getnchannels()} channels")
                data = w.readframes(w.getnframes())
                rate, channels = w.getframerate(), w.getnchannels()
        except FileNotFoundError:
            raise ValueError("file not found") from None
        except (wave.Error, EOFError) as e:
            raise ValueError(f"not a WAV file ({e})") from None
        if not data:
            raise ValueError("the file has no sound in it")
        return cls(path, rate, channels, data)

    @property
    def duration(self) -> float:
        return len(self.data) / (2 * self.channels * self.rate)

    def converted(self, rate: int, channels: int) -> bytes:
        """The samples at another rate (linear interpolation) and channel count, for a device that insists."""
        samples = array.array("h", self.data)
        if sys.byteorder == "big":
            samples.byteswap()
        if self.channels == 2:  # to mono first
            samples = array.array("h", ((samples[i] + samples[i + 1]) // 2 for i in range(0, len(samples) - 1, 2)))
        if rate != self.rate:
            count = int(len(samples) * rate / self.rate)
            step, last = self.rate / rate, len(samples) - 1
            out = array.array("h", bytes(2 * count))
            for n in range(count):
                x = n * step
                i = int(x)
                j = min(i + 1, last)
                out[n] = int(samples[i] + (samples[j] - samples[i]) * (x - i))
            samples = out
        if channels == 2:
            samples = array.array("h", (s for s in samples for _ in range(2)))
        if sys.byteorder == "big":
            samples.byteswap()
        return samples.tobytes()


class AlsaPlayer:
    """Plays one sound at a time on one ALSA PCM, in a thread; :meth:`stop` silences it at once."""

    def __init__(self, device: str, on_error: Callable[[str], None]) -> None:
        self.device = device
        self._on_error = on_error  # called on the player thread: hand it over to the loop
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def playing(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, sound: Sound, *, loop: bool) -> None:
        self.stop()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._play, args=(sound, loop, self._stop), name=f"sound-{self.device}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the sound player on %s did not stop within %.1f s", self.device, timeout)
            self._thread = None

    def _play(self, sound: Sound, loop: bool, stop: threading.Event) -> None:
        import alsaaudio

        # Non-blocking: a blocking write can wait far longer than a period (PulseAudio's null sink has
        # been seen to hold one for 1.5 s), and a stop must not wait for it.
        try:
            pcm = alsaaudio.PCM(
                alsaaudio.PCM_PLAYBACK,
                alsaaudio.PCM_NONBLOCK,
                device=self.device,
                rate=sound.rate,
                channels=sound.channels,
                format=alsaaudio.PCM_FORMAT_S16_LE,
                periodsize=sound.rate * PERIOD_MS // 1000,
            )
        except alsaaudio.ALSAAudioError as e:
            self._on_error(f"cannot open {self.device!r}: {e}")
            return
        try:
            info = pcm.info()  # what the device accepted (a hw: device may insist on 48 kHz stereo)
            rate, channels = info["rate"], info["channels"]
            data = sound.data if (rate, channels) == (sound.rate, sound.channels) else sound.converted(rate, channels)
            frame, chunk = 2 * channels, max(1, info["period_size"]) * 2 * channels
            position = 0
            while not stop.is_set():
                if position >= len(data):
                    if not loop:
                        break
                    position = 0
                written = pcm.write(data[position : position + chunk])
                if written > 0:
                    position += written * frame
                else:  # the buffer is full: try again in half a period
                    stop.wait(PERIOD_MS / 2000)
            if stop.is_set():
                pcm.drop()  # now, not after what is still buffered
            else:  # drain does not wait in non-blocking mode: let the end play out
                stop.wait(info["buffer_time"] / 1_000_000)
        except alsaaudio.ALSAAudioError as e:
            self._on_error(f"playing on {self.device!r} failed: {e}")
        finally:
            pcm.close()
