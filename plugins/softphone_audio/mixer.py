"""The headset's ALSA mixer: one playback control (volume, mute) and one capture control (mic mute).

Which controls exist is read from alsa-lib (:mod:`firmware_app.alsa`, the same as ``firmware-app doctor``);
volumes are read and set with pyalsaaudio. Controls are opened for each use rather than held: a USB headset
can be unplugged and plugged back in, and an open pyalsaaudio Mixer keeps the values it read until
``handleevents()``. Percentages are ALSA's linear mapping of the control's range, as ``amixer`` shows them.
"""

from __future__ import annotations

import logging
from typing import Any

from firmware_app import alsa
from firmware_app.errors import CommandError

log = logging.getLogger("softphone_audio")



class Mixer:
    """A playback and a capture control on one ALSA control device."""

    def __init__(self, device: str, playback: alsa.MixerControl, capture: alsa.MixerControl | None) -> None:
        import alsaaudio  # the "audio" extra; the plugin checks it is there before making a Mixer

        self._alsa = alsaaudio
        self.device = device
        self.playback = playback.name
        self.playback_switch = playback.playback_switch  # without one, muting is turning the volume to 0
        self.capture = capture.name if capture else ""

    @classmethod
    def open(cls, wanted_device: str, pcm: str | None, playback: str, capture: str) -> Mixer:
        """The control device and controls the configuration means (CommandError says what exists)."""
        try:
            device = alsa.find_control_device(wanted_device, alsa.control_device_for(pcm))
            play, cap = alsa.pick_controls(device, alsa.controls(device), playback, capture)
        except alsa.AlsaError as e:
            raise CommandError(str(e)) from None
        return cls(device, play, cap)

    def describe(self) -> str:
        return f"{self.device} {self.playback}" + (f" / {self.capture}" if self.capture else "")

    def _use(self, name: str, what: str, fn: Any) -> Any:
        try:
            m = self._alsa.Mixer(name, device=self.device)
        except self._alsa.ALSAAudioError as e:
            raise CommandError(f"mixer {self.device} {name}: {e}") from None
        try:
            return fn(m)
        except self._alsa.ALSAAudioError as e:
            raise CommandError(f"mixer {self.device} {name}: {what}: {e}") from None
        finally:
            m.close()

    def volume(self) -> int:
        levels = self._use(self.playback, "read the volume", lambda m: m.getvolume())
        return round(sum(levels) / len(levels)) if levels else 0

    def set_volume(self, percent: int) -> None:
        self._use(self.playback, "set the volume", lambda m: m.setvolume(percent))

    def set_muted(self, muted: bool) -> bool:
        """Mute with the playback control's switch; False when it has none (the caller turns the volume down)."""
        if not self.playback_switch:
            return False
        self._use(self.playback, "mute", lambda m: m.setmute(1 if muted else 0))
        return True

    def set_mic_muted(self, muted: bool) -> bool:
        """Turn the capture switch off (muted) or on; False when there is no capture control."""
        if not self.capture:
            return False
        self._use(self.capture, "mute the microphone", lambda m: m.setrec(0 if muted else 1))
        return True
