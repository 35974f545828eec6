"""A headless baresip user agent registered through the test Kamailio, driven over ctrl_tcp."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from .agent import UserAgent
from .kamailio import Kamailio
from .support import LOOPBACK, ManagedProcess, PeerError, PeerTimeout, free_port, require_binary, wait_until

MODULE_DIR = Path("/usr/lib/baresip/modules")

Event = dict[str, Any]
T = TypeVar("T")

# baresip-core has no null audio driver: aubridge's "nil" device swallows playback, and ausine is a source
# that only opens at 48 kHz stereo (anything else closes the call with "Operation not supported").
_CONFIG = """\
poll_method		epoll
sip_listen		{host}:{sip_port}
net_interface		{host}
call_local_timeout	120
call_max_calls		{max_calls}
audio_player		aubridge,nil
audio_alert		aubridge,nil
audio_source		ausine,440
ausrc_srate		48000
ausrc_channels		2
module_path		{module_dir}
module			g711.so
module			aubridge.so
module			ausine.so
module_tmp		account.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		{host}:{ctrl_port}
"""


def encode_netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


def decode_netstrings(buffer: bytearray) -> list[bytes]:
    """Remove and return every complete netstring at the start of `buffer`."""
    frames: list[bytes] = []
    while True:
        colon = buffer.find(b":")
        if colon < 0:
            return frames
        length_text = bytes(buffer[:colon])
        if not length_text.isdigit():
            raise PeerError(f"ctrl_tcp sent a malformed netstring: {bytes(buffer[:40])!r}")
        end = colon + 1 + int(length_text)
        if len(buffer) < end + 1:
            return frames
        if buffer[end : end + 1] != b",":
            raise PeerError("ctrl_tcp netstring is not terminated by ','")
        frames.append(bytes(buffer[colon + 1 : end]))
        del buffer[: end + 1]


class Baresip(UserAgent):
    """baresip 1.0.0 as a far party: registers sip:USER@{kamailio.domain} with digest auth, answers on demand.

    Events are the JSON objects ctrl_tcp emits ({"type": "CALL_INCOMING", "peeruri": ..., "param": ...}).
    Types baresip 1.0.0 emits: CALL_INCOMING, CALL_RINGING, CALL_PROGRESS, CALL_ESTABLISHED, CALL_CLOSED
    (param: the reason, e.g. "486 Busy Here"), TRANSFER (param: the Refer-To target), TRANSFER_FAILED,
    CALL_LOCAL_SDP, CALL_REMOTE_SDP, CALL_RTPESTAB, CALL_RTCP, REGISTER_OK, REGISTER_FAIL, UNREGISTERING,
    SHUTDOWN, EXIT. Registration events usually fire before ctrl_tcp is connected, so start() checks the
    registrar instead.
    """

    def __init__(self, workdir: Path, user: str, password: str, kamailio: Kamailio, *,
                 answermode: str = "manual", max_calls: int = 4) -> None:
        """``max_calls``: more calls than this at once are refused with 486 (1: a phone without call waiting)."""
        self.workdir = Path(workdir)
        self.user = user
        self.password = password
        self.kamailio = kamailio
        self.answermode = answermode
        self.max_calls = max_calls
        self.log_path = self.workdir / "baresip.log"
        self.sip_port = 0
        self.ctrl_port = 0
        self._process: ManagedProcess | None = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()
        self._changed = threading.Condition()
        self._events: list[Event] = []
        self._consumed: set[int] = set()
        self._responses: dict[str, Event] = {}
        self._tokens = itertools.count(1)
        self._send_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------------

    def _start_once(self, timeout: float) -> Self:
        if self._process is not None:
            raise PeerError(f"baresip {self.user} was already started")
        baresip = require_binary("baresip")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sip_port = free_port()
        self.ctrl_port = free_port(udp=False)
        (self.workdir / "config").write_text(_CONFIG.format(
            host=LOOPBACK, sip_port=self.sip_port, ctrl_port=self.ctrl_port, module_dir=MODULE_DIR,
            max_calls=self.max_calls))
        (self.workdir / "accounts").write_text(
            f"<{self.uri}>;auth_pass={self.password};answermode={self.answermode};regint=600\n")
        self._process = ManagedProcess(f"baresip {self.user}", [baresip, "-f", str(self.workdir)],
                                       self.log_path, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        try:
            self._process.start()
            self._connect(deadline - time.monotonic())
            # REGISTER_OK may fire before ctrl_tcp is connected: the registrar's table is the reliable witness.
            wait_until(lambda: self._contacts() or None, max(deadline - time.monotonic(), 0.1), f"baresip {self.user} to register",
                       interval=0.05, alive=self._process.check_alive)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 3.0) -> None:
        """Quit baresip, letting it un-register first; kill it if it is still there after `timeout` seconds."""
        if self._process is None:
            return
        process, self._process = self._process, None
        if self._sock is not None and process.running():
            try:
                self._send({"command": "quit", "params": "", "token": "quit"})
                # After the un-REGISTER, baresip waits for its open SIP transactions (a 487 it never ACKed
                # after a CANCEL keeps one open for 32 s), so do not wait for a clean exit beyond that.
                wait_until(lambda: not process.running() or not self._contacts(), timeout,
                           f"baresip {self.user} to un-register", interval=0.05)
                wait_until(lambda: not process.running(), 0.3, f"baresip {self.user} to exit", interval=0.05)
            except (OSError, PeerError):
                pass  # process.stop() below ends it either way
        process.stop(timeout=0.3)
        self._closing.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._reader is not None:
            self._reader.join(timeout)
            self._reader = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- commands ----------------------------------------------------------------------------------------

    def command(self, name: str, params: str = "", timeout: float = 5.0) -> Event:
        """Run a menu command (dial, accept, hangup, transfer, ...) and return baresip's response object."""
        token = f"t{next(self._tokens)}"
        self._send({"command": name, "params": params, "token": token})

        def response() -> Event | None:
            return self._responses.pop(token, None)

        reply = self._wait(response, timeout, f"baresip {self.user} to answer '{name}'")
        if not reply.get("ok", False):
            raise PeerError(f"baresip {self.user} refused '{name} {params}': {reply.get('data')!r}")
        return reply

    def dial(self, uri: str) -> None:
        self.command("dial", uri)

    def accept(self, call_id: str | None = None) -> None:
        """Answer the current call, or the call with this SIP Call-ID (an event's "id")."""
        self._select_call(call_id)
        self.command("accept")

    def hangup(self, call_id: str | None = None) -> None:
        """End the current call, or the call with this SIP Call-ID.

        With two calls (a transferee calling the target) the current one is the newest: name the call.
        """
        self._select_call(call_id)
        self.command("hangup")

    def transfer(self, uri: str, call_id: str | None = None) -> None:
        """Blind-transfer the current call (or this Call-ID): baresip sends REFER with Refer-To: uri."""
        self._select_call(call_id)
        self.command("transfer", uri)

    def _select_call(self, call_id: str | None) -> None:
        if call_id is None:
            return
        reply = self.command("callfind", call_id)
        # baresip answers ok even when it finds nothing; only this line says the call became current.
        if "setting current call" not in str(reply.get("data")):
            raise PeerError(f"baresip {self.user} has no call {call_id}: {reply.get('data')!r}")

    # -- events ------------------------------------------------------------------------------------------

    @property
    def events(self) -> list[Event]:
        """Every ctrl_tcp event seen so far, oldest first."""
        with self._changed:
            return list(self._events)

    def wait_event(self, type_: str, timeout: float = 5.0, *,
                   where: Callable[[Event], bool] | None = None) -> Event:
        """Return the oldest event of `type_` not returned before, waiting at most `timeout` seconds."""

        def find() -> Event | None:
            for index, event in enumerate(self._events):
                if index not in self._consumed and event.get("type") == type_ and (where is None or where(event)):
                    self._consumed.add(index)
                    return event
            return None

        return self._wait(find, timeout, f"baresip {self.user} event {type_}")

    # -- internals ---------------------------------------------------------------------------------------

    def _wait(self, find: Callable[[], T | None], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = find()
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [e.get("type") for e in self._events]
                    raise PeerTimeout(f"timed out after {timeout:.1f} s waiting for {what}; events: {seen}")
                if self._process is None or not self._process.running():
                    raise PeerError(f"baresip {self.user} is not running while waiting for {what}")
                self._changed.wait(min(remaining, 0.2))

    def _connect(self, timeout: float) -> None:
        assert self._process is not None
        self._sock = wait_until(self._try_connect, max(timeout, 0.1), f"baresip {self.user} ctrl_tcp",
                                interval=0.05, alive=self._process.check_alive)
        self._closing.clear()
        self._reader = threading.Thread(target=self._read_loop, name=f"baresip-{self.user}-ctrl", daemon=True)
        self._reader.start()

    def _contacts(self) -> list[str]:
        """This UA's own bindings in the registrar (other UAs may register the same user)."""
        return [c for c in self.kamailio.contacts(self.user) if f"@{LOOPBACK}:{self.sip_port}" in c]

    def _try_connect(self) -> socket.socket | None:
        try:
            return socket.create_connection((LOOPBACK, self.ctrl_port), timeout=1.0)
        except OSError:
            return None

    def _send(self, message: Event) -> None:
        if self._sock is None:
            raise PeerError(f"baresip {self.user} is not started")
        with self._send_lock:
            self._sock.sendall(encode_netstring(json.dumps(message).encode()))

    def _read_loop(self) -> None:
        assert self._sock is not None
        sock = self._sock
        sock.settimeout(0.2)
        buffer = bytearray()
        while not self._closing.is_set():
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            buffer.extend(chunk)
            frames = decode_netstrings(buffer)
            with self._changed:
                for frame in frames:
                    message = json.loads(frame)
                    if message.get("event"):
                        message["received"] = time.time()
                        self._events.append(message)
                    elif message.get("response"):
                        self._responses[str(message.get("token"))] = message
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()
