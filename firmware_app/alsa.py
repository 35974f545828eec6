"""What alsa-lib knows about this machine's sound: cards, PCM names with their descriptions, mixer controls.

Read through ctypes from ``libasound.so.2``, which is present wherever PJSUA2's ALSA backend is, so the core
and ``firmware-app doctor`` need no extra package (the mixer plugin sets volumes with pyalsaaudio). Only plain
calls, no ctypes callbacks: the service runs with ``MemoryDenyWriteExecute=yes``, which forbids the
executable memory a callback needs. Cards are found through ``/dev/snd`` as alsa-lib does, not
``/proc/asound``, which ``ProcSubset=pid`` hides from the service.

:func:`choose` is the one place that turns what a person wrote (``plughw:CARD=Headset,DEV=0``, ``default``,
``Jabra``) into one of the sound devices PJSUA2 lists.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from firmware_app.errors import FirmwareAppError


class AlsaError(FirmwareAppError):
    """alsa-lib is missing or refused a request (the message names the device)."""


@dataclass(frozen=True, slots=True)
class Card:
    index: int
    id: str  # what ALSA names use: CARD=<id>
    name: str  # "Jabra EVOLVE 20 MS"
    longname: str


@dataclass(frozen=True, slots=True)
class Pcm:
    name: str  # "plughw:CARD=Headset,DEV=0", "default", a name from an .asoundrc
    description: str  # what `aplay -L` shows under the name, lines joined by " / "
    io: str  # "Input", "Output", or "" for both


@dataclass(frozen=True, slots=True)
class MixerControl:
    """A simple mixer control (what `amixer scontrols` lists)."""

    name: str
    index: int
    playback_volume: bool
    capture_volume: bool
    playback_switch: bool
    capture_switch: bool


@cache
def _lib() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    try:
        asound = ctypes.CDLL("libasound.so.2")
        libc = ctypes.CDLL("libc.so.6")
    except OSError as e:
        raise AlsaError(f"alsa-lib is not installed ({e})") from None
    p, vp, i, s = ctypes.POINTER, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    signatures = {
        "snd_strerror": (s, [i]),
        "snd_card_next": (i, [p(i)]),
        "snd_ctl_open": (i, [p(vp), s, i]),
        "snd_ctl_close": (i, [vp]),
        "snd_ctl_card_info_malloc": (i, [p(vp)]),
        "snd_ctl_card_info_free": (None, [vp]),
        "snd_ctl_card_info": (i, [vp, vp]),
        "snd_ctl_card_info_get_id": (s, [vp]),
        "snd_ctl_card_info_get_name": (s, [vp]),
        "snd_ctl_card_info_get_longname": (s, [vp]),
        "snd_device_name_hint": (i, [i, s, p(p(vp))]),
        "snd_device_name_get_hint": (vp, [vp, s]),  # malloc'ed: freed with libc free
        "snd_device_name_free_hint": (i, [p(vp)]),
        "snd_mixer_open": (i, [p(vp), i]),
        "snd_mixer_attach": (i, [vp, s]),
        "snd_mixer_selem_register": (i, [vp, vp, vp]),
        "snd_mixer_load": (i, [vp]),
        "snd_mixer_close": (i, [vp]),
        "snd_mixer_first_elem": (vp, [vp]),
        "snd_mixer_elem_next": (vp, [vp]),
        "snd_mixer_selem_get_name": (s, [vp]),
        "snd_mixer_selem_get_index": (ctypes.c_uint, [vp]),
        "snd_mixer_selem_has_playback_volume": (i, [vp]),
        "snd_mixer_selem_has_capture_volume": (i, [vp]),
        "snd_mixer_selem_has_playback_switch": (i, [vp]),
        "snd_mixer_selem_has_capture_switch": (i, [vp]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(asound, name)
        fn.restype, fn.argtypes = restype, argtypes
    libc.free.restype, libc.free.argtypes = None, [vp]
    return asound, libc


def available() -> bool:
    try:
        _lib()
    except AlsaError:
        return False
    return True


def _text(value: bytes | None) -> str:
    return value.decode(errors="replace") if value else ""


def _error(code: int) -> str:
    return _text(_lib()[0].snd_strerror(code))


def cards() -> list[Card]:
    """The sound cards, in ALSA's order."""
    asound, _ = _lib()
    found: list[Card] = []
    index = ctypes.c_int(-1)
    while asound.snd_card_next(ctypes.byref(index)) == 0 and index.value >= 0:
        ctl, info = ctypes.c_void_p(), ctypes.c_void_p()
        if asound.snd_ctl_open(ctypes.byref(ctl), f"hw:{index.value}".encode(), 0) < 0:
            continue
        try:
            if asound.snd_ctl_card_info_malloc(ctypes.byref(info)) < 0:
                continue
            if asound.snd_ctl_card_info(ctl, info) == 0:
                found.append(
                    Card(
                        index.value,
                        _text(asound.snd_ctl_card_info_get_id(info)),
                        _text(asound.snd_ctl_card_info_get_name(info)),
                        _text(asound.snd_ctl_card_info_get_longname(info)),
                    )
                )
            asound.snd_ctl_card_info_free(info)
        finally:
            asound.snd_ctl_close(ctl)
    return found


def pcms() -> list[Pcm]:
    """Every PCM name alsa-lib offers (what `aplay -L` lists, the ones PJSUA2 lists too)."""
    asound, libc = _lib()
    hints = ctypes.POINTER(ctypes.c_void_p)()
    if asound.snd_device_name_hint(-1, b"pcm", ctypes.byref(hints)) < 0:
        return []
    found: list[Pcm] = []
    try:
        i = 0
        while hints[i]:
            values = []
            for key in (b"NAME", b"DESC", b"IOID"):
                ptr = asound.snd_device_name_get_hint(hints[i], key)
                values.append(ctypes.string_at(ptr).decode(errors="replace") if ptr else "")
                if ptr:
                    libc.free(ptr)
            name, desc, io = values
            if name:
                found.append(Pcm(name, " / ".join(line.strip() for line in desc.splitlines() if line.strip()), io))
            i += 1
    finally:
        asound.snd_device_name_free_hint(hints)
    return found


def controls(device: str) -> list[MixerControl]:
    """The simple mixer controls of a control device (``hw:CARD=Headset``, ``default``, an .asoundrc name)."""
    asound, _ = _lib()
    mixer = ctypes.c_void_p()
    if (rc := asound.snd_mixer_open(ctypes.byref(mixer), 0)) < 0:
        raise AlsaError(f"mixer {device!r}: {_error(rc)}")
    try:
        if (
            (rc := asound.snd_mixer_attach(mixer, device.encode())) < 0
            or (rc := asound.snd_mixer_selem_register(mixer, None, None)) < 0
            or (rc := asound.snd_mixer_load(mixer)) < 0
        ):
            raise AlsaError(f"mixer {device!r}: {_error(rc)}")
        found: list[MixerControl] = []
        elem = asound.snd_mixer_first_elem(mixer)
        while elem:
            found.append(
                MixerControl(
                    _text(asound.snd_mixer_selem_get_name(elem)),
                    asound.snd_mixer_selem_get_index(elem),
                    bool(asound.snd_mixer_selem_has_playback_volume(elem)),
                    bool(asound.snd_mixer_selem_has_capture_volume(elem)),
                    bool(asound.snd_mixer_selem_has_playback_switch(elem)),
                    bool(asound.snd_mixer_selem_has_capture_switch(elem)),
                )
            )
            elem = asound.snd_mixer_elem_next(elem)
        return found
    finally:
        asound.snd_mixer_close(mixer)


# --- choosing a device by what a person wrote ------------------------------------------------------------

_CARD = re.compile(r"CARD=([^,]+)")
_CARD_NUMBER = re.compile(r"^[a-z]*hw:(\d+)")

# When a part of a name matches several PCMs of one card, take the one a headset works best with: shared
# and converting (default/dmix) before exclusive (plughw), and raw hw: last (EBUSY, fixed rates; #4110).
_KIND_ORDER = {"": 0, "default": 1, "sysdefault": 2, "plughw": 3, "dmix": 4, "dsnoop": 4, "front": 5, "hw": 9}


def _kind_rank(name: str) -> int:
    kind = name.split(":", 1)[0] if ":" in name else ""
    return _KIND_ORDER.get(kind, 6)


def card_of(name: str, known: Sequence[Card]) -> Card | None:
    """The card an ALSA name refers to (``...:CARD=<id>`` or ``hw:<n>``), when it is one of ``known``."""
    if m := _CARD.search(name):
        return next((c for c in known if c.id == m[1]), None)
    if m := _CARD_NUMBER.match(name):
        return next((c for c in known if c.index == int(m[1])), None)
    return None


def searchable(name: str, pcm_list: Sequence[Pcm] = (), card_list: Sequence[Card] = ()) -> str:
    """Everything a person may have meant a device by: its name, its description and its card's names."""
    parts = [name]
    parts += [p.description for p in pcm_list if p.name == name]
    if card := card_of(name, card_list):
        parts += [card.id, card.name, card.longname]
    return " ".join(parts).lower()


def choose(
    devices: Sequence[tuple[str, int, int]],
    wanted: str,
    *,
    capture: bool,
    pcms: Sequence[Pcm] = (),
    cards: Sequence[Card] = (),
) -> int | None:
    """Index into ``devices`` (PJSUA2's ``(name, inputs, outputs)``) of the device ``wanted`` means.

    Its exact ALSA name first (also ignoring case), else the devices whose name, description or card name
    contain ``wanted`` (ignoring case), the shared kind of PCM first (see ``_KIND_ORDER``). Only devices that
    can capture (or play) count. None when nothing matches.
    """
    usable = [(i, name) for i, (name, ins, outs) in enumerate(devices) if (ins if capture else outs) > 0]
    for i, name in usable:
        if name == wanted:
            return i
    for i, name in usable:
        if name.lower() == wanted.lower():
            return i
    needle = wanted.lower().strip()
    if not needle:
        return None
    matches = [(i, name) for i, name in usable if needle in searchable(name, pcms, cards)]
    if not matches:
        return None
    return min(matches, key=lambda m: (_kind_rank(m[1]), m[0]))[0]


def find_pcm(wanted: str, *, capture: bool = False) -> str | None:
    """The PCM name ``wanted`` means among those alsa-lib lists (chosen as :func:`choose` does), or None.

    An explicit ALSA name that is not listed (``plughw:1,0``) is returned as it is.
    """
    pcm_list, card_list = pcms(), cards()
    devices = [(p.name, int(p.io != "Output"), int(p.io != "Input")) for p in pcm_list if p.name != "null"]
    index = choose(devices, wanted, capture=capture, pcms=pcm_list, cards=card_list)
    if index is not None:
        return devices[index][0]
    return wanted if ":" in wanted else None


# --- mixers ----------------------------------------------------------------------------------------------

#: Tried in this order when the configuration names no control: what USB and Bluetooth headsets call them.
PLAYBACK_CONTROLS = ("Master", "PCM", "Speaker", "Headset", "Headphone", "Playback")
CAPTURE_CONTROLS = ("Mic", "Capture", "Headset", "Microphone", "Mic Capture")


def control_device_for(pcm: str | None) -> str:
    """The control device that goes with a PCM name: the card of ``plughw:CARD=X,DEV=0`` is ``hw:CARD=X``."""
    if not pcm:
        return "default"
    if m := _CARD.search(pcm):
        return f"hw:CARD={m[1]}"
    if m := _CARD_NUMBER.match(pcm):
        return f"hw:{m[1]}"
    return pcm  # "default", "pulse" or an .asoundrc name: the same name usually has a ctl too


def find_control_device(wanted: str, default: str) -> str:
    """A control device by its ALSA name, or by a part of a card's name (``Jabra`` -> ``hw:CARD=MS``)."""
    if not wanted:
        return default
    if ":" in wanted or wanted == "default":
        return wanted
    try:
        controls(wanted)
        return wanted  # an .asoundrc ctl of that name
    except AlsaError:
        pass
    found = cards()
    for card in found:
        if wanted.lower() in f"{card.id} {card.name} {card.longname}".lower():
            return f"hw:CARD={card.id}"
    known = ", ".join(f"{c.id} ({c.name})" for c in found) or "none"
    raise AlsaError(f"no control device or sound card matches {wanted!r} (cards here: {known})")


def pick_controls(
    device: str, found: Sequence[MixerControl], playback: str, capture: str
) -> tuple[MixerControl, MixerControl | None]:
    """The playback control (with a volume) and capture control (with a switch) the configuration means.

    An empty name picks the first of :data:`PLAYBACK_CONTROLS` / :data:`CAPTURE_CONTROLS` there is, then any
    control that fits; ``capture = "none"`` means no capture control. AlsaError lists what is there.
    """
    by_name = {c.name: c for c in found}
    listing = ", ".join(by_name) or "none"
    if playback:
        play = by_name.get(playback)
        if play is None:
            raise AlsaError(f"mixer control {playback!r} is not on {device!r} (controls there: {listing})")
    else:
        fits = [c for c in found if c.playback_volume]
        play = next((by_name[n] for n in PLAYBACK_CONTROLS if n in by_name and by_name[n].playback_volume), None)
        play = play or (fits[0] if fits else None)
        if play is None:
            raise AlsaError(f"no playback volume control on {device!r} (controls there: {listing})")
    if capture == "none":
        return play, None
    if capture:
        cap = by_name.get(capture)
        if cap is None:
            raise AlsaError(f"mixer control {capture!r} is not on {device!r} (controls there: {listing})")
        return play, cap
    fits = [c for c in found if c.capture_switch]
    cap = next((by_name[n] for n in CAPTURE_CONTROLS if n in by_name and by_name[n].capture_switch), None)
    return play, cap or (fits[0] if fits else None)
