"""What the phone and its SIP engine say to each other: the engine's reports and the commands it takes.

:class:`firmware_app.engine.SipEngine` is the engine that drives PJSUA2; :class:`firmware_app.testing.FakeEngine`
speaks the same plain values without PJSUA2, for fast tests of the phone. Nothing here imports PJSUA2.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, Union

from firmware_app.model import Call, Registration
from firmware_app.quality import CallQuality

#: Longest time the engine thread blocks before it checks for a stop request and beats its heart.
POLL_MS = 1000

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# --- what the engine reports (plain values, safe to hand to any thread) --------------------------------

@dataclass(frozen=True, slots=True)
class RegEvent:
    registration: Registration


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    call: Call  # its alert_info and call_info are the INVITE's (auto-answer, intercom)
    source: str  # "ip:port" the INVITE came from
    to_user: str  # the user part of the INVITE's request URI


@dataclass(frozen=True, slots=True)
class QualityEvent:
    """A call's audio stream ended (the call ended, or a re-INVITE replaced it): its RTCP figures."""

    quality: CallQuality


@dataclass(frozen=True, slots=True)
class LineEvent:
    """A watched colleague's line (dialog event package): idle, ringing, busy or unknown."""

    uri: str
    state: str  # a firmware_app.dialoginfo.LineState value
    ended: bool = False  # the subscription ended: the phone subscribes again after a while
    reason: str = ""  # why it ended: the registrar's answer ("404 Not Found") or its reason


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """A digit the far end sent (RFC 4733 telephone-event, or SIP INFO)."""

    call_id: int
    digit: str
    method: str  # "rfc4733" or "info"


@dataclass(frozen=True, slots=True)
class CallEvent:
    call: Call  # SIP-level state: ringing, dialing, connecting, active or ended


@dataclass(frozen=True, slots=True)
class MediaEvent:
    call_id: int
    local_hold: bool  # our hold re-INVITE was answered 2xx
    active: bool  # audio flows both ways


@dataclass(frozen=True, slots=True)
class TransferEvent:
    call_id: int
    code: int  # the sipfrag status (100, 180, 200, 486...) or the REFER's own final status
    reason: str
    final: bool


@dataclass(frozen=True, slots=True)
class MwiEvent:
    """A message summary NOTIFY (RFC 3842), solicited or not."""

    source: str
    body: str


@dataclass(frozen=True, slots=True)
class ReinviteEvent:
    """Our re-INVITE (hold or resume) got a final answer other than 2xx, e.g. 491 Request Pending."""

    call_id: int
    code: int
    owner: bool  # this phone created the dialog's Call-ID (RFC 3261 14.1 picks the retry delay from it)


@dataclass(frozen=True, slots=True)
class TransferRequestEvent:
    """The far end asked this phone to call someone else (we are the transferee)."""

    call_id: int
    uri: str
    accepted: bool


EngineEvent = Union[
    RegEvent, IncomingEvent, CallEvent, MediaEvent, TransferEvent, TransferRequestEvent, MwiEvent, ReinviteEvent,
    DtmfEvent, LineEvent, QualityEvent,
]


# --- what the phone asks of an engine --------------------------------------------------------------------


class Engine(Protocol):
    """The SIP engine as the phone uses it. Commands run on the phone's thread and raise
    :class:`firmware_app.errors.CommandError` when they cannot be carried out; reports come through ``post``."""

    heartbeat: float  # time.monotonic() of the engine thread's last poll
    version: str
    sound_backend: str
    capture_device: str | None
    playback_device: str | None

    @property
    def alive(self) -> bool: ...

    def start(self, timeout: float = 10.0) -> None: ...
    def attach_thread(self, name: str = "phone") -> None: ...
    def stop(self, timeout: float = 5.0) -> None: ...

    def register(self) -> None: ...
    def unregister(self) -> bool: ...
    def switch_registrar(self) -> str: ...

    def ring(self, call_id: int) -> None: ...
    def answer(self, call_id: int) -> None: ...
    def reject(self, call_id: int, code: int, contact: str = "") -> None: ...
    def hangup(self, call_id: int) -> None: ...
    def hangup_all(self) -> None: ...
    def make_call(self, uri: str) -> int: ...
    def hold(self, call_id: int) -> None: ...
    def unhold(self, call_id: int) -> None: ...
    def transfer(self, call_id: int, uri: str) -> None: ...
    def transfer_replaces(self, call_id: int, other_id: int) -> None: ...
    def set_mic_muted(self, call_id: int, muted: bool) -> None: ...
    def join(self, call_id: int, other_id: int) -> None: ...
    def send_dtmf(self, call_id: int, digits: str) -> str: ...
    def watch_lines(self, uris: Iterable[str]) -> None: ...
    def rewatch_line(self, uri: str) -> None: ...
    def play_sound(self, path: str, *, loop: bool = False) -> int | None: ...
    def stop_sound(self, handle: int) -> None: ...
    def route_audio(self, device: str | None) -> tuple[str, str]: ...

    def reconcile(self) -> list[Call]: ...
    def live_calls(self) -> set[int]: ...


#: How the phone makes its engine: ``factory(config, post, trusted=networks)``.
EngineFactory = Callable[..., Engine]
