"""The sounds shipped with the audio plugin, made here: ``python -m softphone_audio.tones`` writes them again.

Small 16 kHz, 16-bit mono WAV files built from soft bell-like notes (a few harmonics, a quick attack and an
exponential decay), so they are pleasant on a headset at any volume and compress to nothing in the image.
"""

from __future__ import annotations

import math
import struct
import sys
import wave
from pathlib import Path

RATE = 16000
SOUNDS = Path(__file__).with_name("sounds")


def _note(freq: float, length: float, *, decay: float = 0.25, level: float = 0.35) -> list[float]:
    """One bell-like note: the fundamental and two quieter harmonics, 5 ms attack, exponential decay."""
    samples = []
    for n in range(int(length * RATE)):
        t = n / RATE
        envelope = min(1.0, t / 0.005) * math.exp(-t / decay)
        wave_ = (
            math.sin(2 * math.pi * freq * t)
            + 0.30 * math.sin(2 * math.pi * 2 * freq * t)
            + 0.08 * math.sin(2 * math.pi * 3 * freq * t)
        )
        samples.append(level * envelope * wave_ / 1.38)
    return samples


def _mix(length: float, notes: list[tuple[float, list[float]]]) -> list[float]:
    out = [0.0] * int(length * RATE)
    for start, samples in notes:
        offset = int(start * RATE)
        for i, value in enumerate(samples[: len(out) - offset]):
            out[offset + i] += value
    return out


def ring() -> list[float]:
    """A rising three-note chime, twice, then silence: 3 s, looped while a call rings."""
    c5, e5, g5 = 523.25, 659.26, 783.99
    motif = [(0.0, c5), (0.14, e5), (0.28, g5)]
    notes = [(at + rep * 0.75, _note(freq, 0.7)) for rep in range(2) for at, freq in motif]
    return _mix(3.0, notes)


def call_waiting() -> list[float]:
    """Two short soft beeps: someone else called during this call."""
    return _mix(0.5, [(0.0, _note(880.0, 0.15, decay=0.08)), (0.22, _note(880.0, 0.15, decay=0.08))])


def transfer_failed() -> list[float]:
    """A falling pair of notes: the transfer did not go through, the caller is back on the line."""
    return _mix(0.6, [(0.0, _note(659.26, 0.25, decay=0.12)), (0.22, _note(440.0, 0.35, decay=0.15))])


def write(path: Path, samples: list[float]) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(b"".join(struct.pack("<h", max(-32767, min(32767, round(s * 32767)))) for s in samples))


def main() -> int:
    for name, make in (("ring", ring), ("call_waiting", call_waiting), ("transfer_failed", transfer_failed)):
        write(SOUNDS / f"{name}.wav", make())
    return 0


if __name__ == "__main__":
    sys.exit(main())
