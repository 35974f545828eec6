"""Built-in plugin: blind transfer (RFC 3515, RFC 5589) to named targets and pools, and attended transfer.

A person in a call presses a button and the caller is handed to someone else. The sequence on the wire:
hold the call and wait for the hold re-INVITE's 2xx (a REFER racing the hold gets 491 from some peers),
REFER with ``Refer-To: <target>`` and ``Referred-By``, follow the NOTIFY sipfrag progress, and on a final 2xx
leave the call with BYE. On failure (REFER refused, sipfrag >= 300, no final NOTIFY in time) the caller is
taken off hold and is back with the person; a pool then goes on with its next target while the caller waits
on hold.

```toml
[transfer]
default = "reception"       # used by the "transfer" action with no name (double press in a call)
hold_timeout = 5.0          # seconds to wait for the hold to be confirmed
final_timeout = 30.0        # seconds to wait for the final NOTIFY
[transfer.targets.reception]
uri = "100"                 # a SIP URI, or an extension completed with the account's domain
label = "Reception"
[transfer.pools.agents]
targets = ["alice", "bob", "sip:helpdesk@pbx.example"]
strategy = "ordered"        # or "round_robin", "random", "available"
```

``available`` watches the pool's members through the registrar (RFC 4235 dialog events, Kamailio's presence
modules): a transfer goes to the first idle member, then to those whose state is not known, then to those
whose phone rings; a busy member is skipped without an INVITE. While no member's state is known it is the
``ordered`` strategy; when every member is busy the transfer fails at once and the caller stays on the line.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from firmware_app import Phone, hookimpl
from firmware_app.config import Config, complete_uri
from firmware_app.errors import CommandError, ConfigError
from firmware_app.hookspecs import RegisterAction
from firmware_app.model import Call, CallState, TransferState, TransferStatus

CS = CallState

log = logging.getLogger("softphone_transfer")

_URI = re.compile(r"^sips?:[^\s@<>\"]+(@[^\s<>\"]+)?$")
_EXTENSION = re.compile(r"^[A-Za-z0-9_.+*#-]+(@[A-Za-z0-9.-]+(:\d+)?)?$")


class _Target(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    uri: Annotated[str, msgspec.Meta(min_length=1)]
    label: str = ""


class _Pool(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    targets: list[str]
    strategy: Literal["ordered", "round_robin", "random", "available"] = "ordered"
    label: str = ""


class _Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    default: str = ""
    hold_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    final_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 30.0
    attended_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 30.0
    targets: dict[str, _Target] = {}
    pools: dict[str, _Pool] = {}


@dataclass(frozen=True)
class Target:
    name: str
    uri: str
    label: str


class TransferPlugin:
    def __init__(self) -> None:
        self.settings = _Settings()
        self.targets: dict[str, Target] = {}
        self.pools: dict[str, _Pool] = {}
        self._turn: dict[str, int] = {}  # round-robin position per pool
        self._busy: set[int] = set()  # calls with a transfer under way
        self._call_waiters: dict[int, asyncio.Future[Call]] = {}

    # --- configuration ----------------------------------------------------------------------------------

    @hookimpl
    def softphone_configure(self, config: Config) -> None:
        file = str(config.path)
        s = self.settings = config.convert(config.section("transfer"), _Settings, "transfer")
        for name, t in s.targets.items():
            key = f"transfer.targets.{name}.uri"
            if not (_URI.match(t.uri) or _EXTENSION.match(t.uri)):
                raise ConfigError(file, key, f"expected a SIP URI (sip:user@host) or an extension, got {t.uri!r}")
            self.targets[name] = Target(name, complete_uri(t.uri, config.domain), t.label or name)
        for name, pool in s.pools.items():
            key = f"transfer.pools.{name}"
            if name in s.targets:
                raise ConfigError(file, key, "a target has the same name: names must be unique")
            if not pool.targets:
                raise ConfigError(file, f"{key}.targets", "expected at least one target")
            for i, entry in enumerate(pool.targets):
                if entry not in s.targets and not _URI.match(entry):
                    raise ConfigError(
                        file, f"{key}.targets[{i}]", f"unknown target {entry!r} (a name under [transfer.targets] or a sip: URI)"
                    )
        self.pools = dict(s.pools)
        if s.default and s.default not in self.targets and s.default not in self.pools:
            raise ConfigError(file, "transfer.default", f"unknown target or pool {s.default!r}")

    @hookimpl
    def softphone_startup(self, phone: Phone) -> None:
        watched = [uri for name, pool in self.pools.items() if pool.strategy == "available" for uri in self._uris(name)]
        if watched:
            try:
                phone.watch_lines(dict.fromkeys(watched))
            except CommandError as e:
                log.warning("cannot watch the agents' lines (%s): the available pools try them in order", e)

    def _uris(self, pool: str) -> list[str]:
        return [(self.targets[e].uri if e in self.targets else e) for e in self.pools[pool].targets]

    @hookimpl
    def softphone_register_actions(self, register: RegisterAction) -> None:
        register("transfer", self.blind_transfer)
        register("attended_transfer", self.attended_transfer)

    @hookimpl
    def softphone_call_state_changed(self, call: Call, previous: CallState | None) -> None:
        waiter = self._call_waiters.get(call.id)
        if waiter is not None and not waiter.done() and call.state in (CS.ACTIVE, CS.ENDED):
            waiter.set_result(call)

    # --- resolving names --------------------------------------------------------------------------------

    def resolve(self, name: str | None, lines: dict[str, str] | None = None) -> tuple[str, list[Target]]:
        """The targets to try, in order, for a target name, a pool name or a sip: URI (``lines``: the
        watched lines' states, for an ``available`` pool)."""
        name = name or self.settings.default
        if not name:
            raise CommandError("no transfer target given and [transfer] default is not set")
        if name in self.targets:
            return name, [self.targets[name]]
        if name in self.pools:
            pool = self.pools[name]
            entries = [self.targets.get(e) or Target(e, e, e) for e in pool.targets]
            if pool.strategy == "round_robin":
                start = self._turn.get(name, 0) % len(entries)
                self._turn[name] = start + 1
                entries = entries[start:] + entries[:start]
            elif pool.strategy == "random":
                entries = random.sample(entries, len(entries))
            elif pool.strategy == "available":
                entries = _by_availability(name, entries, lines or {})
            return name, entries
        if _URI.match(name):
            return name, [Target(name, name, name)]
        known = ", ".join(sorted([*self.targets, *self.pools])) or "none configured"
        raise CommandError(f"unknown transfer target {name!r} (known: {known})")

    # --- blind transfer ---------------------------------------------------------------------------------

    async def blind_transfer(self, phone: Phone, argument: str | None) -> dict[str, object]:
        name, targets = self.resolve(argument, phone.line_states())
        call = phone.current_call(CS.ACTIVE, CS.HELD)
        if call.id in self._busy:
            raise CommandError(f"call {call.id} is already being transferred")
        self._busy.add(call.id)
        phone.set_transferring(call.id, True)
        last = TransferStatus(call.id, name, "", TransferState.FAILED, reason="nothing tried")
        try:
            for i, target in enumerate(targets):
                last = await self._attempt(phone, call.id, name, target)
                if last.state is TransferState.SUCCEEDED:
                    return {"call": call.id, "target": name, "to": target.uri, "code": last.code}
                if phone.get_call(call.id) is None:
                    break  # the call ended: nobody to transfer any more
                if i + 1 < len(targets):
                    phone.report_transfer(_status(last, TransferState.PROGRESS))
        finally:
            self._busy.discard(call.id)
            phone.set_transferring(call.id, False)
        back = _give_back(phone, call.id)
        phone.report_transfer(last)
        raise CommandError(
            f"transfer to {name} failed: {last.code or ''} {last.reason}".replace("  ", " ")
            + ("; the caller is back on the line" if back else "")
        )

    async def _attempt(self, phone: Phone, call_id: int, name: str, target: Target) -> TransferStatus:
        def status(state: TransferState, code: int = 0, reason: str = "") -> TransferStatus:
            return TransferStatus(call_id, name, target.uri, state, code, reason, target.label)

        phone.report_transfer(status(TransferState.STARTED))
        if not await phone.hold(call_id, timeout=self.settings.hold_timeout):
            return status(TransferState.FAILED, 0, "the hold was not confirmed")

        def progress(code: int, reason: str) -> None:
            phone.report_transfer(status(TransferState.PROGRESS, code, reason))

        try:
            code, reason = await asyncio.wait_for(
                phone.refer(call_id, target.uri, progress), self.settings.final_timeout
            )
        except asyncio.TimeoutError:
            return status(TransferState.FAILED, 0, f"no final NOTIFY within {self.settings.final_timeout:g} s")
        except CommandError as e:
            return status(TransferState.FAILED, 0, str(e))
        if 200 <= code < 300:
            result = status(TransferState.SUCCEEDED, code, reason)
            phone.report_transfer(result)
            if phone.get_call(call_id) is not None:
                try:
                    phone.hangup(call_id)  # PJSIP leaves the call up after a transfer: BYE is ours to send
                except CommandError:
                    pass  # the far end hung up first
            return result
        return status(TransferState.FAILED, code, reason)

    # --- attended transfer (RFC 3891 Replaces) ----------------------------------------------------------

    async def attended_transfer(self, phone: Phone, argument: str | None) -> dict[str, object]:
        """Hold the caller, call the target, and when it answers REFER the caller to it with Replaces."""
        name, targets = self.resolve(argument)
        target = targets[0]
        call = phone.current_call(CS.ACTIVE, CS.HELD)
        if call.id in self._busy:
            raise CommandError(f"call {call.id} is already being transferred")
        self._busy.add(call.id)
        consult: int | None = None
        try:
            if not await phone.hold(call.id, timeout=self.settings.hold_timeout):
                raise CommandError("the hold was not confirmed")
            phone.set_transferring(call.id, True)
            phone.report_transfer(TransferStatus(call.id, name, target.uri, TransferState.STARTED, label=target.label))
            consult = phone.dial(target.uri)
            waiter = asyncio.get_running_loop().create_future()
            self._call_waiters[consult] = waiter
            try:
                answered = await asyncio.wait_for(waiter, self.settings.attended_timeout)
            except asyncio.TimeoutError:
                answered = None
            if answered is None or answered.state is not CS.ACTIVE:
                raise CommandError(f"{target.label} did not answer")
            code, reason = await asyncio.wait_for(
                phone.refer_replaces(call.id, consult), self.settings.final_timeout
            )
            if not 200 <= code < 300:
                raise CommandError(f"{code} {reason}")
            phone.report_transfer(
                TransferStatus(call.id, name, target.uri, TransferState.SUCCEEDED, code, reason, target.label)
            )
            for cid in (call.id, consult):
                if phone.get_call(cid) is not None:
                    phone.hangup(cid)
            return {"call": call.id, "target": name, "to": target.uri, "code": code}
        except (CommandError, asyncio.TimeoutError) as e:
            reason = str(e) or "no final NOTIFY in time"
            if consult is not None and phone.get_call(consult) is not None:
                phone.hangup(consult)
            phone.set_transferring(call.id, False)
            _give_back(phone, call.id)
            phone.report_transfer(
                TransferStatus(call.id, name, target.uri, TransferState.FAILED, 0, reason, target.label)
            )
            raise CommandError(f"attended transfer to {name} failed: {reason}") from None
        finally:
            self._busy.discard(call.id)
            if consult is not None:
                self._call_waiters.pop(consult, None)
            phone.set_transferring(call.id, False)


_AVAILABILITY = {"idle": 0, "unknown": 1, "ringing": 2}


def _by_availability(pool: str, entries: list[Target], lines: dict[str, str]) -> list[Target]:
    """Idle members first, then those not known, then those ringing; busy ones are left out. While nothing
    is known, the pool's order."""
    states = {t.uri: lines.get(t.uri, "unknown") for t in entries}
    if all(state == "unknown" for state in states.values()):
        return entries
    chosen = sorted((t for t in entries if states[t.uri] != "busy"), key=lambda t: _AVAILABILITY[states[t.uri]])
    skipped = [t.name for t in entries if states[t.uri] == "busy"]
    if skipped:
        log.info("transfer pool %s: %s busy, not tried", pool, ", ".join(skipped))
    if not chosen:
        raise CommandError(f"every agent of {pool} is busy: the caller stays on the line")
    return chosen


def _give_back(phone: Phone, call_id: int) -> bool:
    """Take the caller off hold after a failed transfer; False when the call is gone or going."""
    if phone.get_call(call_id) is None:
        return False
    try:
        phone.resume(call_id)
    except CommandError as e:
        log.info("call %s: not resumed after the failed transfer: %s", call_id, e)
        return False
    return True


def _status(s: TransferStatus, state: TransferState) -> TransferStatus:
    return TransferStatus(s.call_id, s.target, s.uri, state, s.code, s.reason, s.label)
