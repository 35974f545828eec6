"""A headless Linphone (Debian 12's linphone-cli 5.1) registered through the test Kamailio, driven over the
command socket of ``linphone-daemon``."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from .agent import UserAgent
from .kamailio import Kamailio
from .support import LOOPBACK, ManagedProcess, PeerError, PeerTimeout, free_port, require_binary, tail, wait_until

T = TypeVar("T")

# ortp creates the daemon's --pipe socket at "/tmp/" + name, whatever the name: a path relative to /tmp
# reaches any directory. sun_path holds 108 bytes.
_PIPE_ROOT = Path("/tmp")
_MAX_SOCKET_PATH = 100
# The daemon answers each command with one write() of a few hundred bytes; on a Unix stream socket one
# recv() of this size returns all of it.
_RECV_SIZE = 65536
_EVENT_POLL_SECONDS = 0.02
# A sound card Linphone could open: "Card 'ALSA: Headset' added with capabilities [capture playback]".
_USABLE_CARD = re.compile(r"Card '([^']*)' added with capabilities \[(?!none\])")

# UDP only, on loopback. No "gruu"/"outbound" in Supported: Kamailio's registrar would hand out a GRUU
# (sip:USER@127.0.0.1;gr=...), Linphone would make it its Contact, and in-dialog requests (ACK, BYE) sent
# there never reach it.
# Random RTP ports (-1) so that several Linphones and the phone never clash. The databases live in the
# peer's own directory, not in ~/.local/share/linphone.
_CONFIG = """\
[sip]
sip_port={sip_port}
sip_tcp_port=0
sip_tls_port=0
bind_address={host}
supported=replaces
register_only_when_network_is_up=0
default_proxy=0

[proxy_0]
reg_proxy=<sip:{domain};transport=udp>
reg_identity={identity}
reg_expires=600
reg_sendregister=1
publish=0

[auth_info_0]
username={user}
passwd={password}
domain={domain}

[rtp]
audio_rtp_port=-1
video_rtp_port=-1
bind_address={host}

[sound]
echocancellation=0

[video]
enabled=0
capture=0
display=0

[storage]
uri={workdir}/linphone.db
call_logs_db_uri={workdir}/call-history.db
zrtp_secrets_db_uri={workdir}/zrtp-secrets.db
"""

# linphone-daemon has no switch for liblinphone's "use files" mode; with no card that can capture or play,
# a call streams from and to no file at all (silence in, nothing out). These keep every card out of sight:
# PulseAudio (another test may run a server) and ALSA (whose pulse plugin would reach that server).
_NO_SOUND_ENV = {"PULSE_SERVER": "unix:/nonexistent/pulse", "ALSA_CONFIG_PATH": os.devnull}


@dataclass(frozen=True)
class DaemonResponse:
    """One answer of linphone-daemon: "Status: Ok|Error", an optional "Reason:", then "Key: value" lines."""

    ok: bool
    reason: str
    fields: Mapping[str, str]
    text: str

    @classmethod
    def parse(cls, text: str) -> DaemonResponse:
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, colon, value = line.partition(":")
            if colon:
                # A popped event's lines follow the answer's own ("Status", "Size"); no key repeats.
                fields.setdefault(key.strip(), value.strip())
        status = fields.get("Status")
        if status not in ("Ok", "Error"):
            raise PeerError(f"linphone-daemon sent an answer without a status: {text!r}")
        return cls(ok=status == "Ok", reason=fields.get("Reason", ""), fields=fields, text=text)


@dataclass(frozen=True)
class LinphoneEvent:
    """An event from the daemon's queue, e.g. type "call-state-changed" with fields Event, From and Id.

    "From" is the call's From: the far party for a call Linphone received, Linphone itself for one it made.
    """

    type: str
    fields: Mapping[str, str]
    received: float

    @property
    def state(self) -> str | None:
        """The call state of a call-state-changed event, e.g. "LinphoneCallStreamsRunning"."""
        return self.fields.get("Event")

    @property
    def call_id(self) -> int | None:
        """The daemon's number for the call (not its SIP Call-ID)."""
        value = self.fields.get("Id", "")
        return int(value) if value.isdigit() else None


class Linphone(UserAgent):
    """linphone-daemon 5.1 as a far party: registers sip:USER@{kamailio.domain} with digest auth over UDP.

    Calls are numbered by the daemon (1, 2, ...); every call gets its number with its first event. Call
    states are liblinphone's names: LinphoneCallIncomingReceived, LinphoneCallOutgoingRinging,
    LinphoneCallConnected, LinphoneCallStreamsRunning, LinphoneCallPaused, LinphoneCallPausedByRemote,
    LinphoneCallRefered (a REFER arrived), LinphoneCallError, LinphoneCallEnd, LinphoneCallReleased...
    As a transferee it obeys an in-dialog REFER by itself: it answers 202, pauses the call, calls the target
    and reports that call in NOTIFY sipfrags.
    """

    def __init__(self, workdir: Path, user: str, password: str, kamailio: Kamailio, *,
                 auto_answer: bool = False) -> None:
        self.workdir = Path(workdir)
        self.user = user
        self.password = password
        self.kamailio = kamailio
        self.auto_answer = auto_answer
        self.log_path = self.workdir / "linphone.log"
        self.config_path = self.workdir / "linphonerc"
        self.socket_path = self.workdir / "daemon.sock"
        self._socket_dir: Path | None = None
        self.sip_port = 0
        self._process: ManagedProcess | None = None
        self._sock: socket.socket | None = None
        self._sock_lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._closing = threading.Event()
        self._changed = threading.Condition()
        self._events: list[LinphoneEvent] = []
        self._consumed: set[int] = set()
        self._poll_error: PeerError | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def _start_once(self, timeout: float) -> Self:
        if self._process is not None:
            raise PeerError(f"Linphone {self.user} was already started")
        daemon = require_binary("linphone-daemon")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_path = self._socket_path()
        self.socket_path.unlink(missing_ok=True)
        self.sip_port = free_port()
        self.config_path.write_text(_CONFIG.format(
            sip_port=self.sip_port, host=LOOPBACK, domain=self.kamailio.domain, identity=self.uri,
            user=self.user, password=self.password, workdir=self.workdir))
        self.log_path.write_bytes(b"")
        argv = [daemon, "--config", str(self.config_path), "--log", str(self.log_path),
                "--pipe", os.path.relpath(self.socket_path, _PIPE_ROOT)]
        if self.auto_answer:
            argv.append("--auto-answer")
        # HOME too: nothing of the test run lands in the real home directory.
        env = {**_NO_SOUND_ENV, "HOME": str(self.workdir)}
        argv = [require_binary("env"), *(f"{key}={value}" for key, value in env.items()), *argv]
        self._process = ManagedProcess(f"Linphone {self.user}", argv, self.log_path, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        try:
            self._process.start()
            self._connect(deadline - time.monotonic())
            wait_until(self._registered, max(deadline - time.monotonic(), 0.1), f"Linphone {self.user} to register",
                       interval=0.05, alive=self._process.check_alive)
        except PeerError as exc:
            self.stop()
            raise PeerError(f"{exc}\n--- end of {self.log_path} ---\n{tail(self.log_path)}") from exc
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 3.0) -> None:
        """Un-register, quit the daemon, and kill it if it is still there after `timeout` seconds."""
        if self._process is None:
            return
        process = self._process
        if self._sock is not None and process.running():
            try:
                self.command("unregister ALL")
                wait_until(lambda: not self._contacts(), timeout, f"Linphone {self.user} to un-register",
                           interval=0.05)
            except PeerError:
                pass  # the binding expires on its own; stopping must not fail the test
        self._closing.set()
        if self._poller is not None:
            self._poller.join(timeout)
            self._poller = None
        if self._sock is not None and process.running():
            try:
                # "quit" lets liblinphone flush its log; SIGTERM would kill it mid-sentence.
                self.command("quit")
                wait_until(lambda: not process.running(), timeout, f"Linphone {self.user} to exit", interval=0.05)
            except PeerError:
                pass  # process.stop() below ends it either way
        self._process = None
        process.stop(timeout=0.5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.socket_path.unlink(missing_ok=True)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        # liblinphone writes its log through a buffered FILE: only now, after the exit, is it complete.
        self._check_no_sound_card()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- commands ----------------------------------------------------------------------------------------

    def command(self, line: str, timeout: float = 5.0) -> DaemonResponse:
        """Run one daemon command ("call sip:...", "call-status 1", ...) and return its answer; raise on Error."""
        response = self._exchange(line, timeout)
        if not response.ok:
            raise PeerError(f"Linphone {self.user} refused '{line}': {response.reason or response.text!r}; "
                            f"log: {self.log_path}")
        return response

    def call(self, uri: str) -> int:
        """Call `uri`; returns the daemon's number for the new call."""
        return int(self.command(f"call {uri}").fields["Id"])

    def answer(self, call_id: int | None = None) -> None:
        """Answer the ringing call (or call `call_id`)."""
        self.command("answer" if call_id is None else f"answer {call_id}")

    def transfer(self, call_id: int, uri: str) -> None:
        """Blind-transfer call `call_id`: Linphone sends an in-dialog REFER with Refer-To: uri."""
        self.command(f"call-transfer {call_id} {uri}")

    def terminate(self, call_id: int) -> None:
        self.command(f"terminate {call_id}")

    def call_state(self, call_id: int) -> str | None:
        """Linphone's own view of a call ("LinphoneCallStreamsRunning", ...); None once the call is gone."""
        response = self._exchange(f"call-status {call_id}", 5.0)
        if not response.ok:
            if "No call with such id" in response.reason:
                return None
            raise PeerError(f"Linphone {self.user}: call-status {call_id} failed: {response.reason}")
        return response.fields["State"]

    # -- events ------------------------------------------------------------------------------------------

    @property
    def events(self) -> list[LinphoneEvent]:
        """Every event popped so far, oldest first."""
        with self._changed:
            return list(self._events)

    def states(self, call_id: int) -> list[str]:
        """The call states one call went through so far, in order."""
        return [e.state for e in self.events if e.call_id == call_id and e.state is not None]

    def wait_event(self, state: str, timeout: float = 5.0, *, call_id: int | None = None,
                   where: Callable[[LinphoneEvent], bool] | None = None) -> LinphoneEvent:
        """Return the oldest call-state event `state` (of call `call_id`) not returned before, waiting at most
        `timeout` seconds."""

        def find() -> LinphoneEvent | None:
            for index, event in enumerate(self._events):
                if (index not in self._consumed and event.state == state
                        and (call_id is None or event.call_id == call_id) and (where is None or where(event))):
                    self._consumed.add(index)
                    return event
            return None

        what = f"Linphone {self.user} call state {state}" + (f" on call {call_id}" if call_id is not None else "")
        return self._wait(find, timeout, what)

    # -- internals ---------------------------------------------------------------------------------------

    def _wait(self, find: Callable[[], T | None], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = find()
                if found is not None:
                    return found
                if self._poll_error is not None:
                    raise PeerError(f"{self._poll_error} while waiting for {what}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(e.call_id, e.state or e.type) for e in self._events]
                    raise PeerTimeout(f"timed out after {timeout:.1f} s waiting for {what}; events (call, state): "
                                      f"{seen}; log: {self.log_path}")
                if self._process is None or not self._process.running():
                    raise PeerError(f"Linphone {self.user} is not running while waiting for {what}; "
                                    f"end of {self.log_path}:\n{tail(self.log_path)}")
                self._changed.wait(min(remaining, 0.2))

    def _connect(self, timeout: float) -> None:
        assert self._process is not None
        self._sock = wait_until(self._try_connect, max(timeout, 0.1), f"Linphone {self.user}'s command socket",
                                interval=0.05, alive=self._process.check_alive)
        self._closing.clear()
        self._poll_error = None
        self._poller = threading.Thread(target=self._poll_events, name=f"linphone-{self.user}-events", daemon=True)
        self._poller.start()

    def _socket_path(self) -> Path:
        path = self.workdir.absolute() / "daemon.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        # Deep pytest tmp dirs exceed sun_path: a short directory of our own instead.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="lp-", dir=_PIPE_ROOT))
        return self._socket_dir / "daemon.sock"

    def _try_connect(self) -> socket.socket | None:
        if not self.socket_path.exists():
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            return None
        return sock

    def _exchange(self, line: str, timeout: float) -> DaemonResponse:
        """Send one command and read its answer; the daemon serves one command at a time per connection."""
        with self._sock_lock:
            if self._sock is None:
                raise PeerError(f"Linphone {self.user} is not started")
            try:
                self._sock.settimeout(timeout)
                self._sock.sendall(line.encode() + b"\n")
                data = self._sock.recv(_RECV_SIZE)
            except TimeoutError as exc:
                # A late answer would be taken for the next command's: this connection is done for.
                self._sock.close()
                self._sock = None
                raise PeerTimeout(f"Linphone {self.user} did not answer '{line}' within {timeout:.1f} s") from exc
            except OSError as exc:
                raise PeerError(f"Linphone {self.user}'s command socket failed on '{line}': {exc}") from exc
            if not data:
                raise PeerError(f"Linphone {self.user} closed its command socket on '{line}'")
            return DaemonResponse.parse(data.decode(errors="replace"))

    def _poll_events(self) -> None:
        """The daemon queues events until asked: pop them one by one, all the time."""
        while not self._closing.is_set():
            try:
                response = self._exchange("pop-event", 2.0)
            except PeerError as exc:
                if not self._closing.is_set():
                    with self._changed:
                        self._poll_error = exc
                        self._changed.notify_all()
                return
            event_type = response.fields.get("Event-type")
            if event_type is not None:
                event = LinphoneEvent(event_type, response.fields, time.time())
                with self._changed:
                    self._events.append(event)
                    self._changed.notify_all()
            # "Size" is what is left in the queue after this pop.
            if response.fields.get("Size", "0") == "0":
                self._closing.wait(_EVENT_POLL_SECONDS)

    def _contacts(self) -> list[str]:
        """This UA's own bindings in the registrar (other UAs may register the same user)."""
        return [c for c in self.kamailio.contacts(self.user) if f"@{LOOPBACK}:{self.sip_port}" in c]

    def _registered(self) -> bool:
        """Bound at the registrar and known to Linphone: un-registering before Linphone has taken in the 200
        would send no REGISTER at all."""
        return bool(self._contacts()) and (
            self.command("register-status ALL").fields.get("State") == "LinphoneRegistrationOk")

    def _check_no_sound_card(self) -> None:
        usable = _USABLE_CARD.search(self.log_path.read_text(errors="replace"))
        if usable:
            raise PeerError(f"Linphone {self.user} found sound card {usable.group(1)!r}; the tests must not use one")
