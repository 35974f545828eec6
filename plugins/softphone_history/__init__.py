"""Built-in plugin: recent calls, kept across restarts in a small file of bounded size.

One entry per call, written when the call ends: the direction, the far end (URI and display name), when it
started and was answered (wall clock, ISO 8601 with the time zone), how long it lasted, how it ended
(``answered``, ``missed``, ``rejected``, ``busy``: refused while in another call, ``failed`` with the SIP
code, ``cancelled``: an outgoing call given up before it was answered), who ended it when that is known
(``local``/``remote``), and where a successful blind or attended transfer sent it.

``status`` shows the last 10 under ``history`` (newest first); each finished call is also the event
``call_history``. Actions: ``history`` (every entry, newest first; ``history:5`` the last five) and
``history_clear``.

```toml
[history]
size = 50                                   # entries kept, 1..1000
file = "/var/lib/firmware-app/history.json" # relative to this file's folder; "" = in memory only
```

Without ``file`` the history goes to ``$STATE_DIRECTORY/history.json`` when systemd gives a state directory
(``StateDirectory=firmware-app``: the same /var/lib/firmware-app), else to /var/lib/firmware-app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from firmware_app import Phone, hookimpl
from firmware_app.config import Config
from firmware_app.errors import CommandError
from firmware_app.hookspecs import RegisterAction
from firmware_app.model import Call, CallState, Direction, TransferState, TransferStatus

log = logging.getLogger("softphone_history")

DEFAULT_FILE = Path("/var/lib/firmware-app/history.json")
VERSION = 1  # of the file's format
STATUS_ENTRIES = 10  # shown in ``status``
#: A call that ends while a transfer of it is under way waits this long for the transfer's outcome.
TRANSFER_WAIT_S = 5.0

_ANSWERED = (CallState.CONNECTING, CallState.ACTIVE, CallState.HELD, CallState.TRANSFERRING)
_REQUEST_TERMINATED = 487  # CANCEL: the caller gave up (incoming), or we did (outgoing)

Result = Literal["answered", "missed", "rejected", "busy", "refused", "failed", "cancelled"]


class Entry(msgspec.Struct, kw_only=True, frozen=True):
    """One finished call, as the file, ``status``, the event and the actions show it."""

    direction: Literal["incoming", "outgoing"]
    remote_uri: str
    remote_name: str = ""
    start: str  # ISO 8601 with the offset: when the phone first heard of the call
    answered: str | None = None
    end: str
    duration: float | None = None  # seconds from answered to end (answered calls only)
    result: Result
    code: int = 0  # the SIP status the call ended with (failed: why; busy: what the phone answered)
    reason: str = ""
    ended_by: Literal["local", "remote"] | None = None  # None: not known
    transferred_to: str | None = None  # the target URI of a successful transfer
    sip_call_id: str = ""


class HistoryFile(msgspec.Struct, kw_only=True):
    version: int
    calls: list[Entry] = []  # newest first


class _Head(msgspec.Struct):
    """Only the version: a file of another version is not read as this one."""

    version: int


class _Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    file: str = str(DEFAULT_FILE)


@dataclass
class _Live:
    """A call not written yet."""

    call: Call
    start: float
    answered: float | None = None
    ended: float | None = None
    transferring: bool = False  # a transfer started and has no outcome yet
    transferred_to: str | None = None
    timer: asyncio.TimerHandle | None = None


def default_file() -> Path:
    """``$STATE_DIRECTORY/history.json`` under systemd (``StateDirectory=firmware-app``), else the default."""
    state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state_dir) / DEFAULT_FILE.name if state_dir else DEFAULT_FILE


def iso(t: float) -> str:
    """A wall-clock time as ISO 8601 with the local offset, to the second."""
    return datetime.fromtimestamp(t, tz=timezone.utc).astimezone().isoformat(timespec="seconds")


class HistoryPlugin:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # wall clock, seconds since the epoch (tests advance their own)
        self.size = _Settings().size
        self.path: Path | None = default_file()  # None: in memory only
        self.entries: list[Entry] = []  # newest first
        self.phone: Phone | None = None
        self._live: dict[int, _Live] = {}
        self._loaded = False  # nothing is written before the file was read (a call may end before startup)
        self._writable = True  # False once a bad file could not be moved aside: it is not overwritten
        self._write_error = ""
        self._unsubscribe: Callable[[], None] | None = None

    # --- configuration and lifecycle --------------------------------------------------------------------

    @hookimpl
    def softphone_configure(self, config: Config) -> None:
        section = config.section("history")
        settings = config.convert(section, _Settings, "history")
        self.size = settings.size
        if "file" not in section:
            self.path = default_file()
        elif settings.file:
            self.path = config.path.parent / settings.file
        else:
            self.path = None

    @hookimpl
    def softphone_register_actions(self, register: RegisterAction) -> None:
        register("history", self.history)
        register("history_clear", self.history_clear)

    @hookimpl
    def softphone_startup(self, phone: Phone) -> None:
        self.phone = phone
        self._unsubscribe = phone.subscribe(self._on_event)
        early = self.entries  # calls that ended while the phone was starting (its first events)
        loaded = self._load()
        self.entries = (early + loaded)[: self.size]
        self._loaded = True
        if self.path is not None:
            log.info("call history: %s entries from %s", len(loaded), self.path)
        if early:
            self._save()
        self._publish()

    @hookimpl
    def softphone_shutdown(self, phone: Phone) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        # The phone hung every call up before this; a call still here is written as it stands.
        for call_id in list(self._live):
            self._finish(call_id)

    # --- what happens to calls --------------------------------------------------------------------------

    @hookimpl
    def softphone_call_state_changed(self, call: Call, previous: CallState | None) -> None:
        live = self._live.get(call.id)
        if live is None:
            if call.state is CallState.ENDED:
                return
            live = self._live[call.id] = _Live(call, self.clock())
        live.call = call
        if live.answered is None and call.state in _ANSWERED:
            live.answered = self.clock()
        if call.state is CallState.ENDED and live.ended is None:
            live.ended = self.clock()
            if live.transferring and self.phone is not None:
                # The far end may hang up before the transfer's success reaches us: wait for the outcome.
                live.timer = self.phone.call_later(TRANSFER_WAIT_S, self._finish, call.id)
            else:
                self._finish(call.id)

    def _on_event(self, event: dict[str, Any]) -> None:
        """A call refused before it rang (do not disturb, forwarding): only the event stream tells of it."""
        if event.get("event") != "call_refused":
            return
        now = iso(self.clock())
        self._add(
            Entry(
                direction="incoming",
                remote_uri=str(event.get("remote_uri", "")),
                start=now,
                end=now,
                result="refused",
                code=int(event.get("code", 0)),
                reason=str(event.get("reason", "")),
                ended_by="local",
            )
        )

    @hookimpl
    def softphone_call_waiting(self, call: Call, busy_with: Call, code: int) -> None:
        now = iso(self.clock())
        self._add(
            Entry(
                direction=call.direction.value,
                remote_uri=call.remote_uri,
                remote_name=call.remote_name,
                start=now,
                end=now,
                result="busy",
                code=code,
                ended_by="local",
                sip_call_id=call.sip_call_id,
            )
        )

    @hookimpl
    def softphone_transfer_status(self, status: TransferStatus) -> None:
        live = self._live.get(status.call_id)
        if live is None:
            return
        if status.state in (TransferState.STARTED, TransferState.PROGRESS):
            live.transferring = True
            return
        live.transferring = False
        if status.state is TransferState.SUCCEEDED:
            live.transferred_to = status.uri or status.target
        if live.ended is not None:
            self._finish(status.call_id)

    def _finish(self, call_id: int) -> None:
        live = self._live.pop(call_id, None)
        if live is None:
            return
        if live.timer is not None:
            live.timer.cancel()
        call = live.call
        end = live.ended if live.ended is not None else self.clock()
        result, ended_by = classify(call, answered=live.answered is not None)
        self._add(
            Entry(
                direction=call.direction.value,
                remote_uri=call.remote_uri,
                remote_name=call.remote_name,
                start=iso(live.start),
                answered=iso(live.answered) if live.answered is not None else None,
                end=iso(end),
                duration=round(max(0.0, end - live.answered), 1) if live.answered is not None else None,
                result=result,
                code=call.status_code,
                reason=call.reason,
                ended_by=ended_by,
                transferred_to=live.transferred_to,
                sip_call_id=call.sip_call_id,
            )
        )

    def _add(self, entry: Entry) -> None:
        self.entries.insert(0, entry)
        del self.entries[self.size :]
        log.info(
            "call history: %s %s %s%s%s",
            entry.direction,
            entry.remote_uri,
            entry.result,
            f" ({entry.code})" if entry.result == "failed" else "",
            f", transferred to {entry.transferred_to}" if entry.transferred_to else "",
        )
        self._save()
        self._publish()
        if self.phone is not None:
            self.phone.emit("call_history", **msgspec.to_builtins(entry))

    # --- actions ----------------------------------------------------------------------------------------

    def history(self, phone: Phone, argument: str | None) -> list[dict[str, Any]]:
        entries = self.entries
        if argument:
            try:
                count = int(argument)
            except ValueError:
                count = 0
            if count < 1:
                raise CommandError(f"history:N wants a number of calls, not {argument!r}")
            entries = entries[:count]
        return msgspec.to_builtins(entries)

    def history_clear(self, phone: Phone, argument: str | None) -> dict[str, int]:
        count = len(self.entries)
        self.entries = []
        self._save()
        self._publish()
        log.info("call history cleared (%s entries)", count)
        phone.emit("call_history_cleared", count=count)
        return {"cleared": count}

    def _publish(self) -> None:
        if self.phone is not None:
            self.phone.publish_status("history", msgspec.to_builtins(self.entries[:STATUS_ENTRIES]))

    # --- the file ---------------------------------------------------------------------------------------

    def _load(self) -> list[Entry]:
        """The file's entries; a file that cannot be read is moved aside (``.bad``) and logged, once."""
        path = self.path
        if path is None:
            return []
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return []  # no history yet (a folder that cannot be is reported when writing)
        except OSError as e:
            problem = e.strerror or str(e)
        else:
            try:
                version = msgspec.json.decode(data, type=_Head).version
                if version == VERSION:
                    return msgspec.json.decode(data, type=HistoryFile).calls
                problem = f"it is version {version}, this phone reads version {VERSION}"
            except msgspec.DecodeError as e:  # ValidationError too
                problem = str(e)
        bad = path.with_name(path.name + ".bad")
        try:
            os.replace(path, bad)
            kept = f"kept as {bad}"
        except OSError as e:
            self._writable = False
            kept = f"left in place, not overwritten (moving it to {bad} failed: {e.strerror or e}): history in memory only"
        log.error("call history %s cannot be read (%s): starting with an empty history; the file is %s", path, problem, kept)
        return []

    def _save(self) -> None:
        """Write the file atomically (a temporary file in the same folder, then rename), mode 0600."""
        path = self.path
        if path is None or not self._loaded or not self._writable:
            return
        data = msgspec.json.format(msgspec.json.encode(HistoryFile(version=VERSION, calls=self.entries)), indent=1)
        tmp: str | None = None
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(data + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError as e:
            error = f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}"
            if error != self._write_error:  # once per problem, not at every call
                log.error("call history %s cannot be written (%s): kept in memory", path, error)
            self._write_error = error
            return
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        if self._write_error:
            log.info("call history %s written again", path)
            self._write_error = ""


def classify(call: Call, *, answered: bool) -> tuple[Result, Literal["local", "remote"] | None]:
    """How an ended call ended, and by whom when its status says so.

    The phone does not say which side ended an answered call (a BYE either way, 200 "Normal call
    clearing"), so that stays None. Unanswered: an incoming call cancelled by its caller ends with 487 (or,
    with no final response of ours, below 300) and was missed; any other final status is the phone's own
    refusal (the configured reject code, 603 when hung up while ringing). An outgoing call ends with 487
    when the phone cancelled it, with the far end's refusal otherwise; 0 is a call PJSUA lost.
    """
    code = call.status_code
    if answered:
        return "answered", None
    if call.direction is Direction.INCOMING:
        if code == 0:
            return "missed", None
        if code == _REQUEST_TERMINATED or code < 300:
            return "missed", "remote"
        return "rejected", "local"
    if code == 0:
        return "failed", None
    if code == _REQUEST_TERMINATED or code < 300:
        return "cancelled", "local"
    return "failed", "remote"
