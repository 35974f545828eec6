"""A SIP engine without SIP, for fast tests of the phone and of plugins: this project's MockFactory.

:class:`FakeEngine` takes the phone's commands and answers with the same plain reports the PJSUA2 engine
posts (:mod:`firmware_app.events`); the test plays the far end and the registrar with its methods
(:meth:`FakeEngine.incoming`, :meth:`FakeEngine.remote_hangup`, :meth:`FakeEngine.registration_failed`...).
It runs on the phone's own thread and imports no PJSUA2::

    fake = FakeEngine.factory()
    phone = Phone(config, host, engine_factory=fake)
    await phone.start()
    call_id = fake.engine.incoming("sip:1001@pbx.example")
    await settle()

What goes over the wire is still judged against real SIP peers (tests/peers); this fake is for the phone's
own decisions: admission, state, busy refusal, retries, transfer bookkeeping, plugin isolation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

from firmware_app.errors import CommandError
from firmware_app.events import (
    CallEvent,
    DtmfEvent,
    EngineEvent,
    IncomingEvent,
    LineEvent,
    MediaEvent,
    Network,
    RegEvent,
    ReinviteEvent,
    TransferEvent,
)
from firmware_app.model import Call, CallState, Direction, Registration, RegistrationState


class FakeEngine:
    """Keeps calls as plain :class:`Call` values and reports each change through ``post``, as the real engine."""

    def __init__(self, config: Any, post: Callable[[EngineEvent], None], trusted: Iterable[Network] = ()) -> None:
        self.config = config
        self.post = post
        self.trusted = list(trusted)
        self.heartbeat = time.monotonic()
        self.version = "fake"
        self.sound_backend = "none"
        self.capture_device: str | None = None
        self.playback_device: str | None = None
        self.commands: list[tuple[Any, ...]] = []  # every command the phone gave, in order
        self.calls: dict[int, Call] = {}
        # What the far end answers the next hold or resume re-INVITEs with, in order (491: glare); then 200.
        self.reinvite_answers: list[int] = []
        self.use_secondary = False
        self.ack_later = False  # answer() leaves calls CONNECTING until ack(), as a slow caller does
        self._ids = itertools.count(1)
        self._running = False

    @classmethod
    def factory(cls) -> FakeEngineFactory:
        """An engine factory for ``Phone(..., engine_factory=...)`` that remembers the engine it made."""
        return FakeEngineFactory(cls)

    # --- lifecycle -----------------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._running

    def start(self, timeout: float = 10.0) -> None:
        self._running = True

    def attach_thread(self, name: str = "phone") -> None:
        pass

    def stop(self, timeout: float = 5.0) -> None:
        self._running = False

    # --- the registrar's side ----------------------------------------------------------------------------

    def registered(self, expires: int = 300) -> None:
        self.post(RegEvent(Registration(RegistrationState.REGISTERED, 200, "OK", expires, self._aor())))

    def registration_failed(self, code: int, reason: str = "") -> None:
        self.post(RegEvent(Registration(RegistrationState.FAILED, code, reason, 0, self._aor())))

    def register(self) -> None:
        self._command("register")

    def unregister(self) -> bool:
        self._command("unregister")
        self.post(RegEvent(Registration(RegistrationState.UNREGISTERED, 200, "OK", 0, self._aor())))
        return True

    def switch_registrar(self) -> str:
        self._command("switch_registrar")
        self.use_secondary = not self.use_secondary
        account = self.config.account
        return account.secondary_registrar if self.use_secondary else account.registrar

    # --- the far end's side ------------------------------------------------------------------------------

    def incoming(self, remote_uri: str = "sip:1001@127.0.0.1", *, source: str = "127.0.0.1:5060",
                 to_user: str | None = None, remote_name: str = "", alert_info: str = "", call_info: str = "") -> int:
        """An INVITE reaches the phone; returns the phone's id for the call."""
        call = Call(next(self._ids), Direction.INCOMING, CallState.RINGING, remote_uri, remote_name,
                    sip_call_id=f"fake-{len(self.calls) + 1}")
        self.calls[call.id] = call
        user = self.config.account.user if to_user is None else to_user
        invite = dataclasses.replace(call, alert_info=alert_info, call_info=call_info)
        self.post(IncomingEvent(invite, source, user))
        return call.id

    def remote_answer(self, call_id: int) -> None:
        """The called party answers an outgoing call."""
        self._set(call_id, CallState.ACTIVE, 200, "OK")
        self.post(MediaEvent(call_id, local_hold=False, active=True))

    def remote_hangup(self, call_id: int, code: int = 200, reason: str = "Normal call clearing") -> None:
        """The far end hangs up (BYE), cancels (CANCEL: ``code=487``) or refuses an outgoing call."""
        self._set(call_id, CallState.ENDED, code, reason)

    def transfer_progress(self, call_id: int, code: int, reason: str = "", *, final: bool = False) -> None:
        """A NOTIFY's sipfrag (or the REFER's own answer) for a transfer this phone started."""
        self.post(TransferEvent(call_id, code, reason, final))

    # --- commands (the phone's side) ---------------------------------------------------------------------

    def ring(self, call_id: int) -> None:
        self._command("ring", call_id)

    def answer(self, call_id: int) -> None:
        self._command("answer", call_id)
        if self.ack_later:
            self._set(call_id, CallState.CONNECTING, 200, "OK")  # until ack()
            return
        self._set(call_id, CallState.ACTIVE, 200, "OK")
        self.post(MediaEvent(call_id, local_hold=False, active=True))

    def ack(self, call_id: int) -> None:
        """The caller's ACK to the phone's 200 comes in (with ``ack_later``)."""
        self._set(call_id, CallState.ACTIVE, 200, "OK")
        self.post(MediaEvent(call_id, local_hold=False, active=True))

    def reject(self, call_id: int, code: int, contact: str = "") -> None:
        self._command("reject", call_id, code, *([contact] if contact else []))
        self._set(call_id, CallState.ENDED, code, "")

    def hangup(self, call_id: int) -> None:
        self._command("hangup", call_id)
        self._set(call_id, CallState.ENDED, 200, "Normal call clearing")

    def hangup_all(self) -> None:
        for call_id in list(self.calls):
            self.hangup(call_id)

    def make_call(self, uri: str) -> int:
        self._command("make_call", uri)
        call = Call(next(self._ids), Direction.OUTGOING, CallState.DIALING, uri, sip_call_id=f"fake-out-{uri}")
        self.calls[call.id] = call
        self.post(CallEvent(call))
        return call.id

    def hold(self, call_id: int) -> None:
        self._media_op("hold", call_id, local_hold=True)

    def unhold(self, call_id: int) -> None:
        self._media_op("unhold", call_id, local_hold=False)

    def transfer(self, call_id: int, uri: str) -> None:
        self._command("transfer", call_id, uri)

    def transfer_replaces(self, call_id: int, other_id: int) -> None:
        self._command("transfer_replaces", call_id, other_id)
        self._call(other_id)

    def set_mic_muted(self, call_id: int, muted: bool) -> None:
        self._command("set_mic_muted", call_id, muted)

    def watch_lines(self, uris: Iterable[str]) -> None:
        self._command("watch_lines", list(uris))

    def rewatch_line(self, uri: str) -> None:
        self._command("rewatch_line", uri)

    def line(self, uri: str, state: str, *, ended: bool = False, reason: str = "") -> None:
        """The registrar reports a watched line's state (a NOTIFY), or the subscription's end."""
        self.post(LineEvent(uri, state, ended, reason))

    def send_dtmf(self, call_id: int, digits: str) -> str:
        self._command("send_dtmf", call_id, digits)
        return "rfc4733"

    def remote_dtmf(self, call_id: int, digit: str, method: str = "rfc4733") -> None:
        """The far end sends a DTMF digit."""
        self.post(DtmfEvent(call_id, digit, method))

    def join(self, call_id: int, other_id: int) -> None:
        self._command("join", call_id, other_id)
        self._call(other_id)

    def play_sound(self, path: str, *, loop: bool = False) -> int | None:
        self._command("play_sound", path)
        return None  # as the real engine on the null sound device: nothing to hear

    def stop_sound(self, handle: int) -> None:
        self._command("stop_sound", handle)

    def route_audio(self, device: str | None) -> tuple[str, str]:
        self._command("route_audio", device)
        audio = self.config.audio
        self.capture_device = device or audio.capture_device
        self.playback_device = device or audio.playback_device
        return self.capture_device, self.playback_device

    def reconcile(self) -> list[Call]:
        return []

    def live_calls(self) -> set[int]:
        return set(self.calls)

    # --- helpers -------------------------------------------------------------------------------------------

    def sent(self, name: str) -> list[tuple[Any, ...]]:
        """The arguments of every ``name`` command the phone gave, in order."""
        return [c[1:] for c in self.commands if c[0] == name]

    def _command(self, name: str, *args: Any) -> None:
        if not self._running:
            raise CommandError("the SIP engine is not running")
        if args and name not in ("make_call", "play_sound", "stop_sound", "route_audio", "watch_lines", "rewatch_line"):
            self._call(args[0])
        self.commands.append((name, *args))

    def _call(self, call_id: int) -> Call:
        try:
            return self.calls[call_id]
        except KeyError:
            raise CommandError(f"no call {call_id}") from None

    def _set(self, call_id: int, state: CallState, code: int, reason: str) -> None:
        call = dataclasses.replace(self._call(call_id), state=state, status_code=code, reason=reason)
        if state is CallState.ENDED:
            del self.calls[call_id]
        else:
            self.calls[call_id] = call
        self.post(CallEvent(call))

    def _media_op(self, name: str, call_id: int, *, local_hold: bool) -> None:
        self._command(name, call_id)
        call = self._call(call_id)
        answer = self.reinvite_answers.pop(0) if self.reinvite_answers else 200
        if answer == 200:
            self.post(MediaEvent(call_id, local_hold=local_hold, active=not local_hold))
        else:
            self.post(ReinviteEvent(call_id, answer, owner=call.direction is Direction.OUTGOING))

    def _aor(self) -> str:
        return f"sip:{self.config.account.user}@{self.config.domain}"


class FakeEngineFactory:
    """Makes one :class:`FakeEngine` for a phone and keeps it as ``engine``."""

    def __init__(self, cls: type[FakeEngine] = FakeEngine) -> None:
        self.cls = cls
        self.engine: FakeEngine | None = None

    def __call__(self, config: Any, post: Callable[[EngineEvent], None], trusted: Iterable[Network] = ()) -> FakeEngine:
        self.engine = self.cls(config, post, trusted)
        return self.engine


async def settle(rounds: int = 5) -> None:
    """Let the phone's loop handle what the fake engine posted (``call_soon_threadsafe`` callbacks)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
