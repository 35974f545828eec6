"""The plain values the phone, its plugins and its control socket talk in: never PJSUA2 objects."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any


class PhoneState(enum.StrEnum):
    """What the phone is doing, as a person holding the headset would say it."""

    IDLE = "idle"
    RINGING = "ringing"
    IN_CALL = "in_call"
    WAITING = "waiting"  # in a call (or holding one) while another call rings: call waiting
    ON_HOLD = "on_hold"
    TRANSFERRING = "transferring"


class CallState(enum.StrEnum):
    """The life of one call."""

    RINGING = "ringing"  # incoming, not answered yet
    DIALING = "dialing"  # outgoing, not answered yet
    CONNECTING = "connecting"  # answered, waiting for the ACK
    ACTIVE = "active"
    HELD = "held"
    TRANSFERRING = "transferring"
    ENDED = "ended"


class Direction(enum.StrEnum):
    INCOMING = "incoming"
    OUTGOING = "outgoing"


class IncomingAction(enum.StrEnum):
    """What to do with a new incoming call (the answer of ``softphone_incoming_call``)."""

    RING = "ring"
    ANSWER = "answer"
    REJECT = "reject"


class Gesture(enum.StrEnum):
    """What a person did with a control."""

    SINGLE = "single"
    DOUBLE = "double"
    LONG = "long"
    DOWN = "down"  # a level input (hook switch, cradle) went active
    UP = "up"  # ... and inactive again


class RegistrationState(enum.StrEnum):
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERED = "unregistered"


class TransferState(enum.StrEnum):
    STARTED = "started"
    PROGRESS = "progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Call:
    """A snapshot of one call."""

    id: int  # the phone's own number for the call, never reused while the phone runs
    direction: Direction
    state: CallState
    remote_uri: str
    remote_name: str = ""
    sip_call_id: str = ""
    status_code: int = 0  # last SIP status seen for the call (the reason it ended, when it ended)
    reason: str = ""
    mic_muted: bool = False
    alert_info: str = ""  # the INVITE's Alert-Info and Call-Info headers (incoming calls): auto-answer
    call_info: str = ""


@dataclass(frozen=True, slots=True)
class Registration:
    state: RegistrationState
    code: int = 0
    reason: str = ""
    expires: int = 0
    uri: str = ""


@dataclass(frozen=True, slots=True)
class MessageWaiting:
    """Voicemail waiting for the account, as the PBX's message summary (RFC 3842) says."""

    waiting: bool
    new: int = 0  # new messages (0 when the PBX does not count them)
    old: int = 0
    account: str = ""  # the message account URI, when the PBX names one


@dataclass(frozen=True, slots=True)
class Refusal:
    """How to refuse a call before it rings (:func:`softphone_screen_call`): the SIP answer to send."""

    code: int  # 486 Busy Here, 480 Temporarily Unavailable, 603 Decline, 302 Moved Temporarily...
    reason: str = ""  # for the log and the event stream: "do not disturb", "forwarded"
    contact: str = ""  # a 3xx answer's Contact: where the caller should call instead


@dataclass(frozen=True, slots=True)
class ButtonEvent:
    """One gesture on one control, whatever kind of control it came from."""

    source: str  # "gpio", "ble", "headset", "cli", ...
    button: str  # the control's name in the configuration, e.g. "main"
    gesture: Gesture


@dataclass(frozen=True, slots=True)
class TransferStatus:
    """How a transfer of a call is going."""

    call_id: int
    target: str  # the configured name (or the URI when transferring to a bare URI)
    uri: str
    state: TransferState
    code: int = 0  # the SIP status of the transferee's new call (sipfrag), or of the REFER
    reason: str = ""
    label: str = ""


def to_json(value: Any) -> Any:
    """A plain-JSON form of a model value, for the control socket."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value
