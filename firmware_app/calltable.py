"""The phone's calls as plugins see them, and the phone's state derived from them.

The engine reports a call's SIP state (ringing, dialing, connecting, active, ended); the phone adds what SIP
does not say (held, being transferred, microphone muted) and derives one state for the whole phone.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from firmware_app.events import TransferEvent
from firmware_app.model import Call, CallState, PhoneState


@dataclass
class CallRecord:
    """One call of the phone: the engine's latest view and the phone's own flags and waiters."""

    sip: Call  # the engine's latest view
    held: bool = False
    transferring: bool = False
    muted: bool = False
    media_op: str = ""  # the last hold/resume asked for, retried after a 491 (RFC 3261 14.1)
    media_retries: int = 0
    hold_waiters: list[asyncio.Future[bool]] = field(default_factory=list)
    transfer_events: asyncio.Queue[TransferEvent] | None = None
    hangup_pending: bool = False  # hung up while connecting: the BYE goes once the ACK is in
    alert_info: str = ""  # the INVITE's, kept: the engine's later views do not carry them
    call_info: str = ""

    @property
    def live(self) -> bool:
        return self.sip.state is not CallState.ENDED

    def view(self) -> Call:
        """The call as plugins see it: HELD or TRANSFERRING where SIP only says ACTIVE."""
        state = self.sip.state
        if state is CallState.ACTIVE and self.transferring:
            state = CallState.TRANSFERRING
        elif state is CallState.ACTIVE and self.held:
            state = CallState.HELD
        return dataclasses.replace(
            self.sip, state=state, mic_muted=self.muted, alert_info=self.alert_info, call_info=self.call_info
        )


def phone_state(calls: Iterable[Call]) -> PhoneState:
    """The phone's one state from its calls' views: a transfer, then a call waiting (one rings while another is
    up or held), then a call in progress, then a held call, then a ringing one wins."""
    states = {c.state for c in calls if c.state is not CallState.ENDED}
    if CallState.TRANSFERRING in states:
        return PhoneState.TRANSFERRING
    if CallState.RINGING in states and states & {CallState.ACTIVE, CallState.CONNECTING, CallState.DIALING, CallState.HELD}:
        return PhoneState.WAITING
    if states & {CallState.ACTIVE, CallState.CONNECTING, CallState.DIALING}:
        return PhoneState.IN_CALL
    if CallState.HELD in states:
        return PhoneState.ON_HOLD
    if CallState.RINGING in states:
        return PhoneState.RINGING
    return PhoneState.IDLE
