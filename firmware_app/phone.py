"""The phone: calls, actions and events on one asyncio thread, between the SIP engine and the plugins.

The coordinator of the core's parts: the registration and its retries (:mod:`firmware_app.registration`),
who may ring (:mod:`firmware_app.admission`), the call records and the derived state
(:mod:`firmware_app.calltable`) and the actions (:mod:`firmware_app.actions`). Everything here runs on the
loop thread. The engine's reports arrive through ``call_soon_threadsafe``; input plugins hand button events
over with :meth:`Phone.input`, which is safe from any thread. Plugins hold it as :class:`firmware_app.Phone`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any, Callable

from firmware_app import events as eng
from firmware_app.actions import ActionRegistry
from firmware_app.admission import Admission, resolve_trusted
from firmware_app.calltable import CallRecord, phone_state
from firmware_app.config import Config, complete_uri
from firmware_app.dialoginfo import LineState
from firmware_app.errors import CommandError
from firmware_app.model import (
    ButtonEvent,
    Call,
    CallState,
    Direction,
    IncomingAction,
    MessageWaiting,
    PhoneState,
    Registration,
    RegistrationState,
    TransferStatus,
    to_json,
)
from firmware_app.plugins import PluginHost
from firmware_app.registration import RegistrationKeeper

DTMF_DIGITS = frozenset("0123456789*#ABCD")
LINE_RETRY_S = 5.0  # a watched line whose subscription ended is subscribed to again after this long,
LINE_RETRY_MAX_S = 300.0  # doubling up to this while the registrar refuses it

log = logging.getLogger("firmware_app.phone")

EventListener = Callable[[dict[str, Any]], None]


class Phone:
    """What plugins and the control socket hold: the phone's calls, actions and event stream."""

    def __init__(self, config: Config, plugins: PluginHost, engine_factory: eng.EngineFactory | None = None) -> None:
        self.config = config
        self.plugins = plugins
        self.loop: asyncio.AbstractEventLoop | None = None
        self.engine: eng.Engine | None = None
        self._engine_factory = engine_factory or _sip_engine
        self.state = PhoneState.IDLE
        self._registration = RegistrationKeeper(config.account, self._engine, self._loop, self._registration_changed)
        self._admission = Admission(config, [])
        self._actions = ActionRegistry()
        self._calls: dict[int, CallRecord] = {}
        self._listeners: list[EventListener] = []
        self._stopping = False
        self.restart_requested = asyncio.Event()  # firmware-app run then stops and exits with EXIT_RESTART
        self._tasks: set[asyncio.Task[Any]] = set()
        self._published: dict[str, Any] = {}  # plugins' own parts of status() (publish_status)
        self._lines: dict[str, str] = {}  # watched colleagues' lines: URI -> idle, ringing, busy, unknown
        self._line_retry: dict[str, float] = {}  # lines whose subscription ended: the next retry's delay
        # Hooks (and events) of a change wait until the change is complete: see _changing.
        self._depth = 0
        self._draining = False
        self._pending: list[Callable[[], None]] = []
        self._screened: set[int] = set()  # refused calls (untrusted, other user, busy): never shown to plugins
        self._early: list[eng.EngineEvent] | None = []  # engine events before this thread was attached
        self._reconciler: asyncio.TimerHandle | None = None
        self._missing: set[int] = set()  # calls the engine no longer holds, seen at the last reconcile

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        for name, handler in self.plugins.actions():
            self._actions.register(name, handler)
        trusted = await self.loop.run_in_executor(None, resolve_trusted, self.config)
        self._admission = Admission(self.config, trusted)
        self.engine = self._engine_factory(self.config, self._post_from_engine, trusted=trusted)
        self._registration.set(Registration(RegistrationState.REGISTERING, uri=self.account_uri))
        await self.loop.run_in_executor(None, self.engine.start)
        # Only now may this thread call PJSUA2: events the engine posted meanwhile waited in _early.
        self.engine.attach_thread()
        early, self._early = self._early, None
        for event in early or ():
            self._on_engine_event(event)
        log.info(
            "phone up: PJSIP %s, sound %s, plugins %s",
            self.engine.version,
            self.engine.sound_backend,
            ", ".join(self.plugins.names()) or "none",
        )
        self.plugins.startup(self)

    def set_update(self, state: str, detail: str = "") -> None:
        """What a software update is doing (``firmware-app update`` says it here): shown in :meth:`status`
        under ``update``, as an ``update`` event (the status LED, telemetry); "" when none is under way."""
        update = {"state": state, "detail": detail} if state else None
        if self._published.get("update") != update:
            self.publish_status("update", update)
            self._emit("update", state=state, detail=detail)

    def request_restart(self, reason: str) -> None:
        """Stop as on SIGTERM and have the service manager start the phone again (a plugin's remote command).

        ``firmware-app run`` exits with :data:`firmware_app.app.EXIT_RESTART`, which the unit restarts on.
        """
        log.warning("restarting: %s", reason)
        self.restart_requested.set()

    async def stop(self) -> None:
        """Hang up every call, un-REGISTER, stop the plugins (in reverse order), then the engine."""
        if self._stopping or self.engine is None:
            return
        self._stopping = True
        self._registration.stop()
        if self._reconciler:
            self._reconciler.cancel()
        if self._live_records():
            self.engine.hangup_all()
            deadline = time.monotonic() + 3.0
            while self._live_records():
                if time.monotonic() > deadline:
                    log.warning("calls did not end within 3 s of hanging up")
                    break
                await asyncio.sleep(0.02)
        await self._registration.unregister(timeout=3.0)
        self.plugins.shutdown(self)
        for task in list(self._tasks):
            task.cancel()
        await self.loop.run_in_executor(None, self.engine.stop)
        self._emit("stopped")

    # --- what plugins and the control socket use --------------------------------------------------------

    @property
    def registration(self) -> Registration:
        return self._registration.registration

    @property
    def account_uri(self) -> str:
        return f"sip:{self.config.account.user}@{self.config.domain}"

    def calls(self) -> list[Call]:
        return [r.view() for r in self._live_records()]

    def get_call(self, call_id: int) -> Call | None:
        r = self._calls.get(call_id)
        return r.view() if r else None

    def current_call(self, *states: CallState) -> Call:
        """The call a button acts on: the ringing one first, then the one in progress."""
        calls = self.calls()
        if states:
            calls = [c for c in calls if c.state in states]
        for wanted in (CallState.RINGING, CallState.ACTIVE, CallState.TRANSFERRING, CallState.HELD):
            for c in calls:
                if c.state is wanted:
                    return c
        if calls:
            return calls[0]
        what = " or ".join(states) if states else "any"
        raise CommandError(f"no call ({what}) to act on")

    def complete_uri(self, target: str) -> str:
        return complete_uri(target, self.config.domain)

    def answer(self, call_id: int | None = None) -> Call:
        call = self._pick(call_id, CallState.RINGING)
        self._engine().answer(call.id)
        log.info("call %s: answering %s", call.id, call.remote_uri)
        return call

    def reject(self, call_id: int | None = None, code: int | None = None, contact: str = "") -> Call:
        call = self._pick(call_id, CallState.RINGING)
        self._engine().reject(call.id, code or self.config.account.reject_code, contact)
        log.info("call %s: rejected %s", call.id, call.remote_uri)
        return call

    def hangup(self, call_id: int | None = None) -> Call:
        """End a call: the one in progress first (a call waiting goes on ringing), else the ringing one."""
        call = self._pick(call_id) if call_id is not None else self._in_progress_first()
        record = self._calls[call.id]
        if record.sip.state is CallState.CONNECTING:
            # Answered, the caller's ACK not in yet: PJSIP 2.17 then sends its BYE twice (one held for the
            # ACK, one when the call confirms) and reports the call as declined. Hang up on the ACK instead.
            record.hangup_pending = True
            log.info("call %s: hanging up once the caller's ACK is in", call.id)
            return call
        self._engine().hangup(call.id)
        log.info("call %s: hanging up", call.id)
        return call

    def dial(self, target: str) -> int:
        uri = self.complete_uri(target)
        if any(c.state not in (CallState.HELD, CallState.TRANSFERRING) for c in self.calls()):
            raise CommandError("a call is already in progress")
        call_id = self._engine().make_call(uri)
        log.info("call %s: calling %s", call_id, uri)
        return call_id

    async def hold(self, call_id: int | None = None, timeout: float = 5.0) -> bool:
        """Put a call on hold and wait until the far end confirmed it (2xx to the re-INVITE)."""
        call = self._pick(call_id, CallState.ACTIVE, CallState.TRANSFERRING, CallState.HELD)
        record = self._calls[call.id]
        if record.held:
            return True
        waiter = self._loop().create_future()
        record.hold_waiters.append(waiter)
        record.media_op, record.media_retries = "hold", 0
        self._engine().hold(call.id)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            if waiter in record.hold_waiters:
                record.hold_waiters.remove(waiter)

    def resume(self, call_id: int | None = None) -> Call:
        call = self._pick(call_id, CallState.HELD, CallState.TRANSFERRING, CallState.ACTIVE)
        record = self._calls[call.id]
        with self._changing():
            record.held = False
            record.media_op, record.media_retries = "resume", 0
            self._engine().unhold(call.id)
            self._changed(record)
        return call

    def conference(self) -> list[Call]:
        """Join the two calls in progress (a held one is resumed) into a three-way conference."""
        calls = [c for c in self.calls() if c.state in (CallState.ACTIVE, CallState.HELD)]
        if len(calls) != 2:
            raise CommandError("a conference needs two calls, one of them may be on hold")
        for call in calls:
            if call.state is CallState.HELD:
                self.resume(call.id)
        self._engine().join(calls[0].id, calls[1].id)
        log.info("calls %s and %s: in conference", calls[0].id, calls[1].id)
        self._emit("conference", call_ids=[c.id for c in calls])
        return [self.get_call(c.id) or c for c in calls]

    def set_mic_muted(self, muted: bool, call_id: int | None = None) -> Call:
        call = self._pick(call_id, CallState.ACTIVE, CallState.HELD, CallState.TRANSFERRING)
        record = self._calls[call.id]
        with self._changing():
            self._engine().set_mic_muted(call.id, muted)
            record.muted = muted
            self._changed(record)
        return record.view()

    @property
    def sound_devices(self) -> tuple[str | None, str | None]:
        """The ALSA devices calls use, ``(capture, playback)`` as PJSUA2 names them; None with the null device."""
        engine = self.engine
        return (engine.capture_device, engine.playback_device) if engine else (None, None)

    def route_audio(self, device: str | None) -> tuple[str | None, str | None]:
        """Move the calls' audio, a call in progress included, to the ALSA device ``device`` (both ways);
        None: back to the configured ``[audio]`` devices. Returns :attr:`sound_devices`."""
        devices = self._engine().route_audio(device)
        self._emit("audio_route", capture=devices[0], playback=devices[1])
        return devices

    def play_sound(self, path: str, *, loop: bool = False) -> int | None:
        """Play a WAV file to the headset (the calls' playback device), mixed with any call's audio.

        Returns a handle for :meth:`stop_sound`, or None when calls use the null device. A sound that does
        not loop is stopped by the caller once it has played.
        """
        return self._engine().play_sound(path, loop=loop)

    def stop_sound(self, handle: int) -> None:
        self._engine().stop_sound(handle)

    def set_transferring(self, call_id: int, transferring: bool) -> None:
        record = self._calls.get(call_id)
        if record is None or record.transferring == transferring:
            return
        with self._changing():
            record.transferring = transferring
            self._changed(record)

    async def refer(
        self, call_id: int, uri: str, on_progress: Callable[[int, str], None] | None = None
    ) -> tuple[int, str]:
        """Send REFER to ``uri`` and wait for the transfer's first final outcome: ``(status, reason)``.

        Progress (100 Trying, 180 Ringing) is passed to ``on_progress``. PJSIP may report a second,
        synthetic final outcome when the subscription ends; only the first counts. Returns ``(0, reason)``
        when the call ended first. The caller bounds the wait (``asyncio.wait_for``).
        """
        return await self._transfer(call_id, lambda: self._engine().transfer(call_id, uri), on_progress)

    async def refer_replaces(
        self, call_id: int, other_id: int, on_progress: Callable[[int, str], None] | None = None
    ) -> tuple[int, str]:
        """Attended transfer: REFER the far end of ``call_id`` to ``other_id``'s party with Replaces."""
        return await self._transfer(
            call_id, lambda: self._engine().transfer_replaces(call_id, other_id), on_progress
        )

    async def _transfer(
        self, call_id: int, send: Callable[[], None], on_progress: Callable[[int, str], None] | None
    ) -> tuple[int, str]:
        record = self._calls.get(call_id)
        if record is None or not record.live:
            raise CommandError(f"no call {call_id}")
        queue: asyncio.Queue[eng.TransferEvent] = asyncio.Queue()
        record.transfer_events = queue
        retries = 0
        try:
            send()
            while True:
                event = await queue.get()
                if event.call_id == -1:
                    return 0, "the call ended during the transfer"
                if event.final and event.code == 491 and retries < GLARE_RETRIES:
                    # The REFER crossed a re-INVITE of the far end's (Linphone resumes a call whose transfer
                    # failed): send it again after RFC 3261 14.1's delay, as for our own re-INVITEs.
                    retries += 1
                    delay = _glare_delay(owner=record.sip.direction is Direction.OUTGOING)
                    log.info("call %s: REFER met 491 Request Pending; again in %.2f s", call_id, delay)
                    await asyncio.sleep(delay)
                    if call_id not in self._calls:
                        return 0, "the call ended during the transfer"
                    send()
                    continue
                # PJSIP reports the REFER's 202 as progress "100 Accepted"; a final status in the sipfrag
                # (2xx or >= 300), a refused REFER, or the subscription's end is the outcome.
                if event.final or event.code >= 200:
                    return event.code, event.reason
                if on_progress is not None:
                    on_progress(event.code, event.reason)
        finally:
            record.transfer_events = None

    def report_transfer(self, status: TransferStatus) -> None:
        """Tell every plugin and the event stream how a transfer goes (the transfer plugin calls this)."""
        log.info(
            "call %s: transfer to %s %s%s",
            status.call_id,
            status.label or status.target,
            status.state,
            f" ({status.code} {status.reason})" if status.code else "",
        )
        self._notify(lambda: self.plugins.transfer_status(status))
        self._emit("transfer", **to_json(status))

    def call_soon(self, callback: Callable[..., object], *args: Any) -> asyncio.Handle:
        """Run ``callback`` on the phone's thread once the current hook has returned."""
        return self._loop().call_soon(callback, *args)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> asyncio.TimerHandle:
        return self._loop().call_later(delay, callback, *args)

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> asyncio.Handle | None:
        """From another thread: run ``callback`` on the phone's thread (nothing once the phone has stopped)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return None
        return loop.call_soon_threadsafe(callback, *args)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a plugin's coroutine on the phone's loop; it is cancelled when the phone stops."""
        task = self._loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a plugin task failed", exc_info=task.exception())

    # --- actions and input ------------------------------------------------------------------------------

    def actions(self) -> list[str]:
        return self._actions.names()

    async def run_action(self, action: str) -> Any:
        """Run ``name`` or ``name:argument``; raises CommandError when it cannot be done now."""
        return await self._actions.run(self, action)

    def input(self, event: ButtonEvent) -> None:
        """Hand over a button event from any thread (gpiozero, bleak, evdev...)."""
        self._loop().call_soon_threadsafe(self._on_input, event)

    def map_input(self, event: ButtonEvent) -> str | None:
        """The action ``event`` would run now (the button mapping), without running it."""
        return self.plugins.map_input(event, self.state) or None

    def wants_double(self, source: str, button: str) -> bool:
        """Whether a double press of this button means something right now (loop thread)."""
        return self.plugins.wants_double(source, button, self.state)

    def _on_input(self, event: ButtonEvent) -> tuple[str | None, asyncio.Task[Any] | None]:
        self._emit("input", source=event.source, button=event.button, gesture=event.gesture.value)
        action = self.plugins.map_input(event, self.state)
        if not action:  # None: no plugin maps it; "": a plugin took it, as a duplicate or a no-op
            log.info("%s %s %s: nothing to do while %s", event.source, event.button, event.gesture, self.state)
            return None, None
        return action, self.spawn(self._run_input_action(event, action))

    async def press(self, event: ButtonEvent) -> str | None:
        """The control socket's ``press``: the same path as a physical button; waits for the action."""
        action, task = self._on_input(event)
        if task is not None:
            await asyncio.shield(task)
        return action

    async def _run_input_action(self, event: ButtonEvent, action: str) -> None:
        try:
            await self.run_action(action)
        except CommandError as e:
            log.warning("%s %s %s -> %s: %s", event.source, event.button, event.gesture, action, e)
            self._emit("action_failed", action=action, error=str(e))

    # --- events -----------------------------------------------------------------------------------------

    def subscribe(self, listener: EventListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def emit(self, event: str, **fields: Any) -> None:
        """Put a plugin's own event (``volume``, ``led``...) on the control socket's event stream."""
        self._emit(event, **fields)

    def _emit(self, event: str, **fields: Any) -> None:
        message = {"event": event, "time": round(time.time(), 6), **fields}
        self._notify(lambda: self._deliver(message))

    def _deliver(self, message: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener(message)
            except Exception:
                log.exception("event listener failed")

    # --- changes and their notifications ------------------------------------------------------------------

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """A change of the phone's calls or registration: plugins and listeners hear of it once it is complete.

        So a plugin that answers a call from inside ``softphone_call_state_changed`` acts on a phone that
        has finished ringing it, and what the plugins are told comes in the order it happened.
        """
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._drain()

    def _notify(self, deliver: Callable[[], None]) -> None:
        if self._depth or self._draining:
            self._pending.append(deliver)
        else:
            deliver()

    def _drain(self) -> None:
        if self._draining:
            return  # a hook changed the phone: its news waits for the hook that is running to return
        self._draining = True
        try:
            while self._pending:
                self._pending.pop(0)()
        finally:
            self._draining = False

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "registration": to_json(self.registration),
            "calls": [to_json(c) for c in self.calls()],
            "plugins": self.plugins.names(),
            "actions": self.actions(),
            "engine": {
                "pjsip": self.engine.version if self.engine else "",
                "sound": self.engine.sound_backend if self.engine else "",
                "alive": bool(self.engine and self.engine.alive),
            },
            **self._published,
        }

    def health(self) -> str | None:
        """Why the phone cannot take a call now, or None when it can (the watchdog's question).

        The engine must be polling, and every call the phone believes in must be one the engine still has:
        a call table that PJSUA no longer backs would turn every caller away as busy.
        """
        engine = self.engine
        if (problem := engine_problem(engine)) is not None or engine is None:
            return problem
        stale = sorted(self._unbacked(engine.live_calls()) & self._missing)
        if stale:
            return f"calls {stale} are no longer known to PJSUA"
        return None

    def publish_status(self, name: str, value: Any) -> None:
        """Show a plugin's own state (plain JSON values) under ``name`` in :meth:`status`, e.g. ``"audio"``."""
        if name in ("state", "registration", "calls", "plugins", "actions", "engine"):
            raise ValueError(f"{name!r} is the phone's own part of the status")
        self._published[name] = value

    # --- the engine's reports (loop thread) -------------------------------------------------------------

    def _post_from_engine(self, event: eng.EngineEvent) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_engine_event, event)

    def _on_engine_event(self, event: eng.EngineEvent) -> None:
        if self._early is not None:
            self._early.append(event)
            return
        with self._changing():
            self._on_engine_event_now(event)

    def _on_engine_event_now(self, event: eng.EngineEvent) -> None:
        try:
            match event:
                case eng.RegEvent(registration=reg):
                    self._registration.report(reg)
                case eng.IncomingEvent():
                    self._on_incoming(event)
                case eng.CallEvent(call=call):
                    self._on_call_state(call)
                case eng.MediaEvent():
                    self._on_media(event)
                case eng.TransferEvent():
                    record = self._calls.get(event.call_id)
                    if record is not None and record.transfer_events is not None:
                        record.transfer_events.put_nowait(event)
                case eng.MwiEvent():
                    self._on_mwi(event)
                case eng.DtmfEvent():
                    self._on_dtmf(event)
                case eng.LineEvent():
                    self._on_line(event)
                case eng.QualityEvent(quality=q):
                    log.info("call %s: audio received %s packets, %s lost (%.2f %%), jitter %.1f ms, round trip %.1f ms, "
                             "MOS %.2f", q.call_id, q.rx_packets, q.rx_lost, q.rx_loss_percent, q.jitter_ms, q.rtt_ms, q.mos)
                    self._emit("call_quality", **to_json(q), rx_loss_percent=q.rx_loss_percent)
                case eng.ReinviteEvent():
                    self._on_reinvite_failed(event)
                case eng.TransferRequestEvent(call_id=cid, uri=uri, accepted=ok):
                    log.log(
                        logging.INFO if ok else logging.WARNING,
                        "call %s: the far end asks to transfer us to %s: %s",
                        cid,
                        uri,
                        "accepted" if ok else "refused (not in this phone's domain)",
                    )
                    self._emit("transfer_request", call_id=cid, uri=uri, accepted=ok)
        except Exception:
            log.exception("handling %s failed", type(event).__name__)

    def watch_lines(self, targets: Iterable[str]) -> None:
        """Follow colleagues' lines (idle, ringing, busy) through the registrar (RFC 4235 dialog events)."""
        uris = [self.complete_uri(t) for t in targets]
        self._engine().watch_lines(uris)
        for uri in uris:
            self._lines.setdefault(uri, LineState.UNKNOWN.value)
        self.publish_status("lines", dict(self._lines))

    def line_states(self) -> dict[str, str]:
        """Each watched line's state by URI: idle, ringing, busy or unknown (not heard of, or not watched now)."""
        return dict(self._lines)

    def _on_line(self, event: eng.LineEvent) -> None:
        if event.ended:
            # PJSUA retries by itself only after some endings, and then after five minutes: try again soon,
            # backing off while the registrar keeps refusing (a number it does not serve), said once.
            delay = self._line_retry.get(event.uri, LINE_RETRY_S)
            if event.uri not in self._line_retry:
                log.warning("line %s: the registrar ended the subscription (%s); watching it again", event.uri,
                            event.reason or "no reason given")
            self._line_retry[event.uri] = min(delay * 2, LINE_RETRY_MAX_S)
            self._loop().call_later(delay, self._rewatch_line, event.uri)
        else:
            self._line_retry.pop(event.uri, None)
        if self._lines.get(event.uri) == event.state:
            return
        self._lines[event.uri] = event.state
        log.info("line %s: %s", event.uri, event.state)
        self.publish_status("lines", dict(self._lines))
        self._notify(lambda: self.plugins.line_state_changed(event.uri, event.state))
        self._emit("line", uri=event.uri, state=event.state)

    def _rewatch_line(self, uri: str) -> None:
        try:
            self._engine().rewatch_line(uri)
        except CommandError as e:
            log.info("line %s: not watched again: %s", uri, e)

    def _on_dtmf(self, event: eng.DtmfEvent) -> None:
        record = self._calls.get(event.call_id)
        if record is None or event.digit not in DTMF_DIGITS:
            log.info("ignored a DTMF digit %r for call %s", event.digit, event.call_id)
            return
        call = record.view()
        log.info("call %s: DTMF %s received (%s)", call.id, event.digit, event.method)
        self._notify(lambda: self.plugins.dtmf_received(call, event.digit))
        self._emit("dtmf", call_id=call.id, digit=event.digit, method=event.method, direction="received")

    def send_dtmf(self, digits: str, call_id: int | None = None) -> str:
        """Send DTMF digits (0-9, *, #, A-D) in the call in progress; returns how: "rfc4733" or "info"."""
        digits = digits.strip().upper()
        if not digits or len(digits) > 64 or any(d not in DTMF_DIGITS for d in digits):
            raise CommandError(f"DTMF digits are 0-9, *, # and A-D (at most 64), not {digits!r}")
        call = self._pick(call_id, CallState.ACTIVE, CallState.TRANSFERRING)
        method = self._engine().send_dtmf(call.id, digits)
        log.info("call %s: DTMF %s sent (%s)", call.id, digits, method)
        self._emit("dtmf", call_id=call.id, digits=digits, method=method, direction="sent")
        return method

    def _on_mwi(self, event: eng.MwiEvent) -> None:
        if not self._admission.trusted_source(event.source):
            log.warning("ignored a message-waiting NOTIFY from untrusted %s", event.source)
            return
        status = parse_message_summary(event.body)
        log.info("voicemail: %s", f"{status.new} new, {status.old} old" if status.waiting else "none waiting")
        self._notify(lambda: self.plugins.message_waiting(status))
        self._emit("message_waiting", **to_json(status))

    def _registration_changed(self, registration: Registration) -> None:
        self._notify(lambda: self.plugins.registration_changed(registration))
        self._emit("registration", **to_json(registration))

    def _on_incoming(self, event: eng.IncomingEvent) -> None:
        call = event.call
        if (refusal := self._admission.screen(event.source, event.to_user)) is not None:
            code, why = refusal
            log.warning("refused an INVITE from %s (%s) with %s: %s", event.source, call.remote_uri, code, why)
            self._refuse(call.id, code)
            return
        if self._stopping:
            self._refuse(call.id, 503)
            return
        busy = self._live_records()
        refusal = self.plugins.screen_call(call, busy[0].view() if busy else None)
        if refusal is not None:
            log.info("call %s from %s: refused with %s (%s)", call.id, call.remote_uri, refusal.code, refusal.reason)
            self._refuse(call.id, refusal.code, refusal.contact)
            self._emit("call_refused", call_id=call.id, remote_uri=call.remote_uri, code=refusal.code,
                       reason=refusal.reason, contact=refusal.contact)
            return
        if busy and not self._may_wait(busy):
            log.info("call %s from %s: busy with call %s, rejecting", call.id, call.remote_uri, busy[0].sip.id)
            self._refuse(call.id, 486)
            busy_with = busy[0].view()
            self._notify(lambda: self.plugins.call_waiting(call, busy_with, 486))
            self._emit("call_waiting", call_id=call.id, remote_uri=call.remote_uri, busy_with=busy[0].sip.id, code=486)
            return
        record = CallRecord(call, alert_info=call.alert_info, call_info=call.call_info)
        self._calls[call.id] = record
        self._watch_calls()
        self._changed(record, previous=None)
        decision = self.plugins.incoming_call(record.view()) or IncomingAction.RING
        log.info("call %s from %s: %s", call.id, call.remote_uri, decision)
        try:
            if decision is IncomingAction.ANSWER:
                self._engine().answer(call.id)
            elif decision is IncomingAction.REJECT:
                self._engine().reject(call.id, self.config.account.reject_code)
            else:
                self._engine().ring(call.id)
        except CommandError as e:
            # The caller gave up before we could answer: its end is on the way and will close the record.
            log.info("call %s: %s not sent: %s", call.id, decision, e)

    def _may_wait(self, busy: list[CallRecord]) -> bool:
        """Whether a new call may ring as a waiting call: call waiting is on and the one call there is up."""
        return self.config.calls.call_waiting and len(busy) == 1 and busy[0].sip.state in (CallState.ACTIVE, CallState.CONNECTING)

    def _refuse(self, call_id: int, code: int, contact: str = "") -> None:
        """Answer a call the plugins never see (its end is not reported to them either)."""
        self._screened.add(call_id)
        try:
            self._engine().reject(call_id, code, contact)
        except CommandError as e:
            log.info("call %s: refusal not sent: %s", call_id, e)

    def _on_reinvite_failed(self, event: eng.ReinviteEvent) -> None:
        """A hold or resume refused with 491 is sent again after RFC 3261 14.1's random delay."""
        record = self._calls.get(event.call_id)
        if record is None or not record.media_op:
            return
        op = record.media_op
        if event.code != 491 or record.media_retries >= GLARE_RETRIES:
            log.warning("call %s: %s refused with %s", event.call_id, op, event.code)
            record.media_op = ""
            if op == "resume":
                record.held = True  # the far end still has the call on hold: say so
                self._changed(record)
            return
        record.media_retries += 1
        delay = _glare_delay(owner=event.owner)
        log.info("call %s: %s met 491 Request Pending; again in %.2f s", event.call_id, op, delay)
        self._loop().call_later(delay, self._retry_media, event.call_id, op)

    def _retry_media(self, call_id: int, op: str) -> None:
        record = self._calls.get(call_id)
        if record is None or record.media_op != op or not record.live:
            return
        try:
            if op == "hold":
                self._engine().hold(call_id)
            else:
                self._engine().unhold(call_id)
        except CommandError as e:
            log.warning("call %s: %s not sent again: %s", call_id, op, e)

    def _watch_calls(self) -> None:
        """Reconcile the call table with the engine's every second while there are calls (none when idle)."""
        if self._reconciler is None and not self._stopping:
            self._reconciler = self._loop().call_later(RECONCILE_S, self._reconcile)

    def _reconcile(self) -> None:
        with self._changing():
            self._reconcile_now()

    def _reconcile_now(self) -> None:
        self._reconciler = None
        engine = self.engine
        if engine is None or self._stopping:
            return
        for call in engine.reconcile():
            self._on_call_state(call)
        # A call the engine let go of whose end did not reach us within a tick: end it here.
        live = engine.live_calls()
        missing = self._unbacked(live)
        for cid in missing & self._missing:
            record = self._calls.get(cid)
            if record is not None:
                log.warning("call %s: the engine no longer has it: ended", cid)
                self._on_call_state(dataclasses.replace(record.sip, state=CallState.ENDED, reason="lost by PJSUA"))
        self._missing = missing - self._missing
        self._screened &= live
        if self._calls or live:
            self._watch_calls()

    def _on_call_state(self, call: Call) -> None:
        if call.id in self._screened:
            if call.state is CallState.ENDED:
                self._screened.discard(call.id)
            return
        record = self._calls.get(call.id)
        if record is None:  # an outgoing call (or one a REFER made): first news of it
            if call.state is CallState.ENDED:
                return  # ended before the phone heard of it (or already reconciled): nothing to tell
            record = self._calls[call.id] = CallRecord(call)
            self._watch_calls()
            self._changed(record, previous=None)
            return
        previous = record.view().state
        record.sip = call
        if record.hangup_pending and call.state is not CallState.CONNECTING:
            record.hangup_pending = False
            if call.state is CallState.ACTIVE:
                self._loop().call_soon(self._hangup_now, call.id)
        if call.state is CallState.ENDED:
            record.held = record.transferring = False
            for waiter in record.hold_waiters:
                if not waiter.done():
                    waiter.set_result(False)
            if record.transfer_events is not None:
                record.transfer_events.put_nowait(eng.TransferEvent(-1, 0, "call ended", True))
            log.info("call %s: ended (%s %s)", call.id, call.status_code, call.reason)
        self._changed(record, previous=previous)
        if call.state is CallState.ENDED:
            self._calls.pop(call.id, None)
            if not self._calls:
                self._loop().call_later(TRIM_AFTER_S, self._trim_heap)

    def _on_media(self, event: eng.MediaEvent) -> None:
        record = self._calls.get(event.call_id)
        if record is None:
            return
        record.media_active = event.active
        if event.local_hold:
            record.held = True
            for waiter in record.hold_waiters:
                if not waiter.done():
                    waiter.set_result(True)
        elif event.active:
            record.held = False
        self._changed(record)

    def _changed(self, record: CallRecord, previous: CallState | None | type[...] = ...) -> None:
        call = record.view()
        if previous is ...:
            previous = call.state  # a flag changed (held, muted): report it anyway
        self._notify(lambda: self.plugins.call_state_changed(call, previous))  # type: ignore[arg-type]
        self._emit("call", **to_json(call))
        self._update_state()

    def _update_state(self) -> None:
        state = phone_state(r.view() for r in self._calls.values())
        if state is not self.state:
            previous, self.state = self.state, state
            log.info("phone %s", state)
            self._notify(lambda: self.plugins.phone_state_changed(state, previous))
            self._emit("state", state=state.value, previous=previous.value)

    # --- helpers ----------------------------------------------------------------------------------------

    def _live_records(self) -> list[CallRecord]:
        return [r for r in self._calls.values() if r.live]

    def _unbacked(self, live: set[int]) -> set[int]:
        """The phone's calls that are not among the engine's ``live`` ones."""
        return {r.sip.id for r in self._live_records() if r.sip.id not in live}

    def _trim_heap(self) -> None:
        """Give the heap PJSIP freed after the last calls back to the system, once the phone is quiet.

        glibc keeps freed memory for reuse: without this an idle phone stays ~8 MB larger after a busy
        spell (measured in bench/: all but 1.6 MB of it comes back).
        """
        if self._calls or self._stopping:
            return
        libc = _libc()
        if libc is not None:
            libc.malloc_trim(0)

    def _hangup_now(self, call_id: int) -> None:
        record = self._calls.get(call_id)
        if record is None or not record.live:
            return
        try:
            self._engine().hangup(call_id)
        except CommandError as e:
            log.info("call %s: hang-up not sent: %s", call_id, e)

    def _in_progress_first(self) -> Call:
        calls = self.calls()
        for wanted in (CallState.ACTIVE, CallState.TRANSFERRING, CallState.CONNECTING, CallState.DIALING, CallState.HELD):
            for c in calls:
                if c.state is wanted:
                    return c
        return self.current_call()

    def _pick(self, call_id: int | None, *states: CallState) -> Call:
        if call_id is None:
            return self.current_call(*states)
        call = self.get_call(call_id)
        if call is None or call.state is CallState.ENDED:
            raise CommandError(f"no call {call_id}")
        if states and call.state not in states:
            raise CommandError(f"call {call_id} is {call.state}, not {' or '.join(states)}")
        return call

    def _engine(self) -> eng.Engine:
        if self.engine is None:
            raise CommandError("the phone is not running")
        return self.engine

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            raise CommandError("the phone is not running")
        return self.loop


#: PJSIP releases a call's memory some seconds after the call ended; trimming earlier returns little.
TRIM_AFTER_S = 35.0

#: How often the call table is checked against PJSUA's while there are calls.
RECONCILE_S = 1.0

#: A hold, resume or REFER met by 491 is sent again at most this many times.
GLARE_RETRIES = 3

#: The engine thread is "responsive" while it came back from libHandleEvents this recently.
ENGINE_STALL_S = 3 * eng.POLL_MS / 1000 + 2


def engine_problem(engine: eng.Engine | None) -> str | None:
    """Why the engine is not serving the phone (not running, or stuck inside PJSIP), or None."""
    if engine is None or not engine.alive:
        return "the SIP engine is not running"
    stalled = time.monotonic() - engine.heartbeat
    if stalled > ENGINE_STALL_S:
        return f"the SIP engine is not responding (no poll for {stalled:.0f} s)"
    return None


def _sip_engine(config: Config, post: Callable[[eng.EngineEvent], None], trusted: Any = ()) -> eng.Engine:
    """The PJSUA2 engine (imported here: a phone built on another engine never loads PJSUA2)."""
    from firmware_app.engine import SipEngine

    return SipEngine(config, post, trusted=trusted)


def _glare_delay(*, owner: bool) -> float:
    """RFC 3261 14.1: after a 491, 2.1-4 s when this phone made the dialog's Call-ID, 0-2 s otherwise, so
    that the two ends do not collide again."""
    return random.uniform(2.1, 4.0) if owner else random.uniform(0.0, 2.0)


@functools.cache
def _libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None  # not glibc: nothing to trim


def parse_message_summary(body: str) -> MessageWaiting:
    """RFC 3842 message-summary: ``Messages-Waiting: yes``, ``Voice-Message: 2/8 (0/2)``."""
    fields = {}
    for line in body.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    new = old = 0
    if m := re.match(r"(\d+)/(\d+)", fields.get("voice-message", "")):
        new, old = int(m[1]), int(m[2])
    return MessageWaiting(
        waiting=fields.get("messages-waiting", "").lower() == "yes",
        new=new,
        old=old,
        account=fields.get("message-account", ""),
    )
