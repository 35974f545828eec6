"""Built-in plugin: the headset's volume and mute, the microphone mute, the ring tone and audible cues.

Actions, for any button mapping and for ``firmware-app action volume_up``: ``volume_up`` and ``volume_down``
(by ``step`` percent, or by the argument: ``volume_up:10``, never past ``min_volume``/``max_volume``),
``mute_toggle`` (the headset's speaker) and ``mic_mute_toggle`` (the microphone: the mixer's capture switch
and what every call sends, in PJSUA2; calls that start while it is muted are muted too). The last volume is
kept across restarts in ``state_file``.

Sounds: a ring tone while a call rings (stopped as soon as it is answered, rejected or cancelled), two beeps
when another call comes in during a call (the phone refuses it busy), a falling pair of notes when a
transfer fails and the caller is back on the line. Where they play, and why there:

* On the headset (the calls' playback device), through PJSUA2 (``Phone.play_sound``). PJSUA2 holds that
  device during calls, exclusively for ``hw:``/``plughw:`` names; its conference bridge mixes a cue into the
  call's audio with no second opener (EBUSY) and without the far end hearing it.
* On another device (``ring_device``: a speaker beside the headset), with pyalsaaudio in a small player
  thread of its own (no PJSUA2 there: PJSUA2 has one sound device). If that device fails, the phone rings
  on the headset instead, so a call is never missed for it.

Events on the control socket: ``volume`` (level, muted, at_limit), ``mic_mute`` (muted, mixer, calls),
``sound`` (sound, state ``started``/``stopped``/``failed``, device: ``headset``, the ring device's ALSA name,
or ``none`` when calls use the null device), call_id). ``status`` shows the same under ``audio``.

```toml
[mixer]
device = ""               # ALSA control device ("hw:CARD=Headset", an .asoundrc name) or part of a card's
                          # name ("Jabra"); "" = the card of the calls' playback device
playback_control = ""     # "" = the first of Master, PCM, Speaker, Headset, Headphone with a volume
capture_control = ""      # "" = the first of Mic, Capture, Headset with a capture switch; "none" = none
step = 5                  # percent per volume_up / volume_down
min_volume = 0
max_volume = 100
state_file = ""           # "" = $STATE_DIRECTORY/audio.json (StateDirectory=), else /var/lib/firmware-app/audio.json

[sounds]
ring_device = ""          # "" = the headset; else an ALSA PCM name, e.g. "plughw:CARD=Speaker,DEV=0"
ring_file = ""            # 16-bit PCM WAV files, relative to this file's folder; "" = the ones shipped
call_waiting_file = ""
transfer_failed_file = ""
```
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from pathlib import Path
from typing import Annotated, Any

import msgspec

from firmware_app import Phone, alsa, hookimpl
from firmware_app.config import Config
from firmware_app.errors import CommandError, ConfigError
from firmware_app.hookspecs import RegisterAction
from firmware_app.model import Call, CallState, PhoneState, TransferState, TransferStatus
from firmware_app.state import load_state, save_state, state_dir

from .mixer import Mixer
from .player import AlsaPlayer, Sound

log = logging.getLogger("softphone_audio")

#: How often the call-waiting beeps repeat while a second call waits.
WAITING_REPEAT_S = 5.0

SOUNDS = Path(__file__).with_name("sounds")
HEADSET = "headset"
_LIVE = (CallState.ACTIVE, CallState.HELD, CallState.TRANSFERRING)
Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]


class _MixerSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    device: str = ""
    playback_control: str = ""
    capture_control: str = ""
    step: Annotated[int, msgspec.Meta(ge=1, le=50)] = 5
    min_volume: Percent = 0
    max_volume: Percent = 100
    state_file: str = ""


class _SoundSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    ring_device: str = ""
    ring_file: str = ""
    call_waiting_file: str = ""
    transfer_failed_file: str = ""


def has_pyalsaaudio() -> bool:
    return importlib.util.find_spec("alsaaudio") is not None


class AudioPlugin:
    def __init__(self) -> None:
        self.mixer_settings = _MixerSettings()
        self.sound_settings = _SoundSettings()
        self.sounds: dict[str, Sound] = {}
        self.state_file = state_dir() / "audio.json"
        self.phone: Phone | None = None
        self.mixer: Mixer | None = None
        self.mixer_error = ""
        self.volume: int | None = None
        self._waiting_timer: asyncio.TimerHandle | None = None  # the next call-waiting beeps
        self.muted = False
        self.mic_muted = False
        self.ring_player: AlsaPlayer | None = None  # None: the ring plays on the headset, through PJSUA2
        self._ring_handle: int | None = None
        self._ring_call: int | None = None
        self._ringing = False
        self._cues: dict[asyncio.TimerHandle, int | None] = {}  # stop timer -> PJSUA2 sound handle

    # --- configuration and lifecycle --------------------------------------------------------------------

    @hookimpl
    def softphone_configure(self, config: Config) -> None:
        file = str(config.path)
        m = self.mixer_settings = config.convert(config.section("mixer"), _MixerSettings, "mixer")
        if m.min_volume > m.max_volume:
            raise ConfigError(file, "mixer.min_volume", f"expected at most max_volume ({m.max_volume}), got {m.min_volume}")
        if m.state_file:
            self.state_file = config.path.parent / m.state_file
        s = self.sound_settings = config.convert(config.section("sounds"), _SoundSettings, "sounds")
        for key, name in (("ring_file", "ring"), ("call_waiting_file", "call_waiting"), ("transfer_failed_file", "transfer_failed")):
            value = getattr(s, key)
            path = config.path.parent / value if value else SOUNDS / f"{name}.wav"
            try:
                self.sounds[name] = Sound.load(path)
            except ValueError as e:
                raise ConfigError(file, f"sounds.{key}", f"{path}: {e}") from None

    @hookimpl
    def softphone_register_actions(self, register: RegisterAction) -> None:
        register("volume_up", self.volume_up)
        register("volume_down", self.volume_down)
        register("mute_toggle", self.mute_toggle)
        register("mic_mute_toggle", self.mic_mute_toggle)

    @hookimpl
    def softphone_startup(self, phone: Phone) -> None:
        self.phone = phone
        _, playback = phone.sound_devices
        self._setup_mixer(playback)
        self._setup_ring_device(playback)
        self._publish()

    @hookimpl
    def softphone_shutdown(self, phone: Phone) -> None:
        self._stop_ring()
        if self._waiting_timer is not None:
            self._waiting_timer.cancel()
            self._waiting_timer = None
        for timer, handle in list(self._cues.items()):
            timer.cancel()
            self._stop_headset_sound(handle)
        self._cues.clear()

    def _setup_ring_device(self, playback: str | None) -> None:
        wanted = self.sound_settings.ring_device
        if not wanted or wanted == HEADSET:
            return
        try:
            device = alsa.find_pcm(wanted)
        except alsa.AlsaError as e:
            log.error("sounds.ring_device %r: %s; ringing on the headset", wanted, e)
            return
        if device is None:
            listing = ", ".join(p.name for p in alsa.pcms() if p.io != "Input" and p.name != "null") or "none"
            log.error("sounds.ring_device: no ALSA PCM matches %r (PCMs here: %s); ringing on the headset", wanted, listing)
        elif device == playback:
            log.info("sounds.ring_device %r is the headset: the ring plays through PJSUA2", wanted)
        elif not has_pyalsaaudio():
            log.warning("sounds.ring_device %r needs pyalsaaudio (firmware-app[audio]): ringing on the headset", wanted)
        else:
            self.ring_player = AlsaPlayer(device, self._player_failed)
            log.info("ring tone on %s", device)

    def _setup_mixer(self, playback: str | None) -> None:
        m = self.mixer_settings
        if not has_pyalsaaudio():
            self.mixer_error = "pyalsaaudio is not installed (pip install 'firmware-app[audio]')"
            log.warning("mixer: %s; volume and mute actions are unavailable", self.mixer_error)
            return
        try:
            self.mixer = Mixer.open(m.device, playback, m.playback_control, m.capture_control)
            saved = load_state(self.state_file, "audio").get("volume")
            if isinstance(saved, int) and not isinstance(saved, bool):
                self.volume = self._clamp(saved)
                self.mixer.set_volume(self.volume)
                log.info("mixer %s: volume %s %% (kept from the last run)", self.mixer.describe(), self.volume)
            else:
                self.volume = self.mixer.volume()
                log.info("mixer %s: volume %s %%", self.mixer.describe(), self.volume)
        except CommandError as e:
            self.mixer, self.mixer_error = None, str(e)
            configured = m.device or m.playback_control or m.capture_control
            log.log(logging.ERROR if configured else logging.WARNING, "mixer: %s; volume and mute actions are unavailable", e)

    # --- actions ----------------------------------------------------------------------------------------

    def volume_up(self, phone: Phone, argument: str | None) -> dict[str, Any]:
        return self._step(+1, argument)

    def volume_down(self, phone: Phone, argument: str | None) -> dict[str, Any]:
        return self._step(-1, argument)

    def _step(self, direction: int, argument: str | None) -> dict[str, Any]:
        mixer = self._need_mixer()
        try:
            step = int(argument) if argument else self.mixer_settings.step
        except ValueError:
            raise CommandError(f"the volume step is a number of percent, not {argument!r}") from None
        current = self.volume if self.volume is not None else mixer.volume()
        limit = self.mixer_settings.max_volume if direction > 0 else self.mixer_settings.min_volume
        target = self._clamp(current + direction * step)
        if not (self.muted and not mixer.playback_switch):  # without a switch, muted is the volume at 0
            mixer.set_volume(target)
        self.volume = target
        save_state(self.state_file, {"volume": target}, "audio")
        return self._volume_changed(at_limit=target == limit)

    def mute_toggle(self, phone: Phone, argument: str | None) -> dict[str, Any]:
        mixer = self._need_mixer()
        muted = not self.muted
        if not mixer.set_muted(muted):
            mixer.set_volume(0 if muted else (self.volume or 0))
        self.muted = muted
        return self._volume_changed(at_limit=False)

    def mic_mute_toggle(self, phone: Phone, argument: str | None) -> dict[str, Any]:
        live = [c for c in phone.calls() if c.state in _LIVE]
        return self.set_mic_muted(not (live[0].mic_muted if live else self.mic_muted))

    def set_mic_muted(self, muted: bool) -> dict[str, Any]:
        """Mute (or unmute) the microphone: the mixer's capture switch and what every call sends."""
        phone = self._need_phone()
        in_mixer = False
        if self.mixer is not None:
            try:
                in_mixer = self.mixer.set_mic_muted(muted)
            except CommandError as e:
                log.warning("mic mute in the mixer: %s (the calls are muted all the same)", e)
        calls = [phone.set_mic_muted(muted, c.id).id for c in phone.calls() if c.state in _LIVE]
        self.mic_muted = muted
        log.info("microphone %s (mixer: %s, calls: %s)", "muted" if muted else "on", in_mixer, calls or "none")
        phone.emit("mic_mute", muted=muted, mixer=in_mixer, calls=calls)
        self._publish()
        return {"mic_muted": muted, "mixer": in_mixer, "calls": calls}

    def _volume_changed(self, *, at_limit: bool) -> dict[str, Any]:
        result = {"level": self.volume, "muted": self.muted, "at_limit": at_limit}
        self._need_phone().emit("volume", **result)
        self._publish()
        return result

    def _clamp(self, value: int) -> int:
        return max(self.mixer_settings.min_volume, min(self.mixer_settings.max_volume, value))

    def _need_mixer(self) -> Mixer:
        if self.mixer is None:
            raise CommandError(f"no mixer: {self.mixer_error or 'the phone is not running'}")
        return self.mixer

    def _need_phone(self) -> Phone:
        if self.phone is None:
            raise CommandError("the phone is not running")
        return self.phone

    # --- what happens to calls --------------------------------------------------------------------------

    @hookimpl
    def softphone_phone_state_changed(self, state: PhoneState, previous: PhoneState) -> None:
        if self.phone is None:
            return
        if state is PhoneState.RINGING:
            # After the hooks: a plugin may answer or reject the call at once, and then it never rings.
            self.phone.call_soon(self._ring_if_ringing)
        elif previous is PhoneState.RINGING:
            self._stop_ring()
        if self._waiting_timer is not None and state is not PhoneState.WAITING:
            self._waiting_timer.cancel()
            self._waiting_timer = None
        if state is PhoneState.WAITING and self._waiting_timer is None:
            self._waiting_beeps()

    def _waiting_beeps(self) -> None:
        """While a call waits, the call-waiting beeps over the call every WAITING_REPEAT_S (not a ring tone)."""
        phone = self.phone
        if phone is None or phone.state is not PhoneState.WAITING:
            return
        waiting = next((c for c in phone.calls() if c.state is CallState.RINGING), None)
        self._cue("call_waiting", waiting.id if waiting else None)
        self._waiting_timer = phone.call_later(WAITING_REPEAT_S, self._waiting_beeps)

    @hookimpl
    def softphone_call_state_changed(self, call: Call, previous: CallState | None) -> None:
        if self.mic_muted and not call.mic_muted and call.state is CallState.ACTIVE and previous not in _LIVE:
            # A call that starts while the microphone is muted sends nothing either. (The phone tells the
            # plugins of this change once the one being reported has reached all of them.)
            self._mute_new_call(call.id)

    @hookimpl
    def softphone_transfer_status(self, status: TransferStatus) -> None:
        if status.state is TransferState.FAILED:
            self._cue("transfer_failed", status.call_id)

    @hookimpl
    def softphone_call_waiting(self, call: Call, busy_with: Call, code: int) -> None:
        if self.phone is not None:
            self._cue("call_waiting", call.id)

    def _mute_new_call(self, call_id: int) -> None:
        call = self._need_phone().get_call(call_id)
        if self.mic_muted and call is not None and call.state in _LIVE and not call.mic_muted:
            try:
                self._need_phone().set_mic_muted(True, call_id)
            except CommandError as e:
                log.warning("call %s: could not mute the microphone: %s", call_id, e)

    # --- sounds -----------------------------------------------------------------------------------------

    def _ring_if_ringing(self) -> None:
        phone = self._need_phone()
        if phone.state is not PhoneState.RINGING or self._ringing:
            return
        call = next((c for c in phone.calls() if c.state is CallState.RINGING), None)
        self._ring_call = call.id if call else None
        self._ringing = True
        if self.ring_player is not None:
            self.ring_player.start(self.sounds["ring"], loop=True)
            device = self.ring_player.device
        else:
            self._ring_handle = self._play_headset("ring", loop=True)
            device = HEADSET if self._ring_handle is not None else "none"  # none: calls use the null device
        phone.emit("sound", sound="ring", state="started", device=device, call_id=self._ring_call)
        self._publish()

    def _stop_ring(self) -> None:
        if not self._ringing:
            return
        self._ringing = False
        if self._ring_handle is not None:
            self._stop_headset_sound(self._ring_handle)
            self._ring_handle = None
            device = HEADSET
        elif self.ring_player is not None:
            self.ring_player.stop()
            device = self.ring_player.device
        else:
            device = "none"
        if self.phone is not None:
            self.phone.emit("sound", sound="ring", state="stopped", device=device, call_id=self._ring_call)
            self._publish()

    def _player_failed(self, message: str) -> None:
        """From the player thread: back to the loop, then ring on the headset rather than not at all."""
        phone = self.phone
        if phone is not None:
            phone.call_soon_threadsafe(self._on_player_failed, message)

    def _on_player_failed(self, message: str) -> None:
        log.error("ring tone: %s; ringing on the headset instead", message)
        self._need_phone().emit("sound", sound="ring", state="failed", device=self.ring_player.device, error=message)
        if self._ringing and self._ring_handle is None:
            self._ring_handle = self._play_headset("ring", loop=True)

    def _cue(self, name: str, call_id: int | None) -> None:
        phone = self._need_phone()
        handle = self._play_headset(name, loop=False)
        device = HEADSET if handle is not None else "none"
        phone.emit("sound", sound=name, state="started", device=device, call_id=call_id)
        timer = phone.call_later(
            self.sounds[name].duration + 0.1, lambda: self._cue_done(timer, name, call_id, device)
        )
        self._cues[timer] = handle

    def _cue_done(self, timer: asyncio.TimerHandle, name: str, call_id: int | None, device: str) -> None:
        self._stop_headset_sound(self._cues.pop(timer, None))
        if self.phone is not None:
            self.phone.emit("sound", sound=name, state="stopped", device=device, call_id=call_id)

    def _play_headset(self, name: str, *, loop: bool) -> int | None:
        try:
            return self._need_phone().play_sound(str(self.sounds[name].path), loop=loop)
        except CommandError as e:
            log.error("sound %s: %s", name, e)
            return None

    def _stop_headset_sound(self, handle: int | None) -> None:
        if handle is not None and self.phone is not None:
            try:
                self.phone.stop_sound(handle)
            except CommandError as e:
                log.warning("stopping a sound: %s", e)

    def _publish(self) -> None:
        if self.phone is None:
            return
        self.phone.publish_status(
            "audio",
            {
                "volume": self.volume,
                "muted": self.muted,
                "mic_muted": self.mic_muted,
                "mixer": self.mixer.describe() if self.mixer else None,
                "mixer_error": self.mixer_error or None,
                "ring_device": self.ring_player.device if self.ring_player else HEADSET,
                "ringing": self._ringing,
            },
        )
