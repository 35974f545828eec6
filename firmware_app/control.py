"""The control socket: JSON lines over a Unix socket, for the CLI, field technicians and tests.

A request is one JSON object per line, ``{"cmd": "answer"}``; the reply is one line,
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``. A request with ``"keepalive": SECONDS``
also gets ``{"pending": true}`` every SECONDS until its reply, so a client can tell a long operation (a
transfer through a pool) from a phone that stopped answering. ``{"cmd": "events"}`` turns the connection
into the phone's event stream. The socket is mode 0660 and only root, the service's own user
and members of its group may use it (checked with SO_PEERCRED as well as by the file mode).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware_app.errors import CommandError, FirmwareAppError, NoAnswerError
from firmware_app.model import ButtonEvent, Gesture

if TYPE_CHECKING:  # the CLI's client side must start without PJSUA2 (the phone imports the engine)
    from firmware_app.phone import Phone

log = logging.getLogger("firmware_app.control")

MAX_LINE = 64 * 1024
#: What the phone says while a command is under way, to clients that asked for keepalives.
PENDING = {"pending": True}
MIN_KEEPALIVE = 0.05  # seconds; a client asking for less cannot make the phone flood it
#: Seconds the CLI waits for a word from the phone (a reply, or a keepalive sent every third of it): the
#: service's WatchdogSec, as a phone whose event loop is stuck longer is restarted by systemd anyway.
TIMEOUT = 30.0


class ControlServer:
    def __init__(self, phone: Phone, path: str | os.PathLike[str]) -> None:
        self.phone = phone
        self.path = Path(path)
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._streams: set[asyncio.Task[None]] = set()  # the handlers that are event streams

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket():
            self.path.unlink()  # left over from a phone that did not stop cleanly
        old_umask = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            if self._streams:
                # The phone has just emitted "stopped": let each stream send it, so a reader can tell a
                # stop from a crash, before every connection is ended.
                await asyncio.wait(self._streams, timeout=0.5)
            for task in list(self._handlers):
                task.cancel()
            if self._handlers:
                await asyncio.wait(self._handlers, timeout=1.0)
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None and not _peer_allowed(sock):
            await _send(writer, {"ok": False, "error": "permission denied"})
            writer.close()
            return
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("expected a JSON object")
                except ValueError as e:
                    await _send(writer, {"ok": False, "error": f"bad request: {e}"})
                    continue
                if request.get("cmd") == "events":
                    self._streams.add(handler)
                    await self._stream_events(reader, writer)
                    return
                await _send(writer, await self._answer(request, writer))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # the phone is stopping: end the connection quietly
        finally:
            self._handlers.discard(handler)
            self._streams.discard(handler)
            writer.close()

    async def _stream_events(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)

        def listener(event: dict[str, Any]) -> None:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                pass  # a reader that stopped reading loses events, the phone does not stall

        unsubscribe = self.phone.subscribe(listener)
        try:
            await _send(writer, {"ok": True, "result": self.phone.status()})
            closed = asyncio.ensure_future(reader.read())  # EOF when the client goes away
            while not closed.done():
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({get, closed}, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    await _send(writer, get.result())
                    if get.result().get("event") == "stopped":
                        break
                else:
                    get.cancel()
            closed.cancel()
        finally:
            unsubscribe()

    async def _answer(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> dict[str, Any]:
        """The reply to ``request``, with ``{"pending": true}`` every ``keepalive`` s until then if asked.

        The phone bounds its operations itself (a transfer by its hold and final timeouts per target);
        keepalives let a client bound only the phone's silence, however long an operation rightly takes.
        """
        interval = request.get("keepalive")
        if interval is None:
            return await self.handle(request)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval < math.inf:
            return {"ok": False, "error": f"bad request: keepalive: expected seconds, got {interval!r}"}
        wait: float | None = max(interval, MIN_KEEPALIVE)
        work = asyncio.ensure_future(self.handle(request))
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=wait)
                if done:
                    return work.result()
                try:
                    await _send(writer, PENDING)
                except ConnectionError:
                    wait = None  # the client went away: finish what it asked for all the same
        finally:
            work.cancel()  # done by now, unless the phone is stopping (this handler was cancelled)

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        phone = self.phone
        try:
            call_id = request.get("call")
            if cmd == "status":
                result: Any = phone.status()
            elif cmd == "answer":
                result = phone.answer(call_id).id
            elif cmd == "reject":
                result = phone.reject(call_id, request.get("code")).id
            elif cmd == "hangup":
                result = phone.hangup(call_id).id
            elif cmd == "call":
                result = phone.dial(_required(request, "uri"))
            elif cmd == "press":
                gesture = _required(request, "gesture")
                try:
                    event = ButtonEvent(request.get("source", "cli"), _required(request, "button"), Gesture(gesture))
                except ValueError:
                    raise CommandError(f"unknown gesture {gesture!r} (one of {', '.join(Gesture)})") from None
                result = {"action": await phone.press(event)}
            elif cmd == "action":
                result = await phone.run_action(_required(request, "name"))
            elif cmd == "update":
                state, detail = request.get("state", ""), request.get("detail", "")
                if not isinstance(state, str) or not isinstance(detail, str):
                    raise CommandError("update: state and detail are strings")
                phone.set_update(state[:32], detail[:200])
                result = None
            elif cmd == "transfer":
                result = await phone.run_action(f"transfer:{_required(request, 'target')}")
            else:
                raise CommandError(f"unknown command {cmd!r}")
        except FirmwareAppError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:
            log.exception("control command %s failed", cmd)
            return {"ok": False, "error": f"internal error: {e}"}
        return {"ok": True, "result": result}


def _required(request: dict[str, Any], key: str) -> Any:
    if key not in request:
        raise CommandError(f"{request.get('cmd')}: {key} is required")
    return request[key]


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message, default=str).encode() + b"\n")
    await writer.drain()


def _peer_allowed(sock: socket.socket) -> bool:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    if uid in (0, os.getuid()) or gid == os.getgid():
        return True
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return os.getgid() in {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return False


# --- the client side, for the CLI ----------------------------------------------------------------------


def request(path: str | os.PathLike[str], message: dict[str, Any], timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one command and return the phone's reply, however long its operation rightly takes.

    ``timeout`` bounds the phone's silence, not the operation: the phone bounds its operations itself (a
    transfer by its plugin's hold_timeout and final_timeout per target) and says it is still at work every
    third of ``timeout``. Raises NoAnswerError, naming the socket, when the phone is not running, closes
    the connection or says nothing for ``timeout`` s.
    """
    with _connect(path, timeout) as sock:
        _write(sock, path, {**message, "keepalive": timeout / 3})
        lines = sock.makefile("rb")
        while True:
            reply = _read(lines, path, timeout, "the phone closed the control connection without answering")
            if not reply.get("pending"):
                return reply


def stream_events(path: str | os.PathLike[str], timeout: float = TIMEOUT) -> Iterator[dict[str, Any]]:
    """Yield the phone's reply (with its current status), then its events until it stops.

    Only that first reply is bounded by ``timeout``: an idle phone rightly has no events for hours. A stream
    that ends without the "stopped" event raises NoAnswerError: the phone crashed or was killed.
    """
    with _connect(path, timeout) as sock:
        _write(sock, path, {"cmd": "events"})
        lines = sock.makefile("rb")
        first = _read(lines, path, timeout, "the phone closed the control connection without answering")
        if not first.get("ok"):
            raise FirmwareAppError(first.get("error", "the phone refused the event stream"))
        yield first
        sock.settimeout(None)
        while True:
            event = _read(lines, path, None, "the phone ended the event stream without stopping")
            yield event
            if event.get("event") == "stopped":
                return


def _connect(path: str | os.PathLike[str], timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except OSError as e:
        sock.close()
        match e:
            case FileNotFoundError():
                raise NoAnswerError(f"the phone is not running (no control socket at {path})") from None
            case ConnectionRefusedError():
                raise NoAnswerError(f"the phone is not running (nothing listens on {path})") from None
            case PermissionError():
                raise FirmwareAppError(f"permission denied on {path}: use root or the phone's group") from None
            case TimeoutError():
                raise NoAnswerError(f"no answer from the phone within {timeout:g} s ({path})") from None
            case _:
                raise NoAnswerError(f"cannot reach the phone at {path}: {e.strerror or e}") from None
    return sock


def _write(sock: socket.socket, path: str | os.PathLike[str], message: dict[str, Any]) -> None:
    try:
        sock.sendall(json.dumps(message).encode() + b"\n")
    except TimeoutError:
        raise NoAnswerError(f"no answer from the phone within {sock.gettimeout():g} s ({path})") from None
    except OSError:
        pass  # the phone may have answered and closed already (a refused peer): the reply tells


def _read(
    lines: io.BufferedReader, path: str | os.PathLike[str], timeout: float | None, closed: str
) -> dict[str, Any]:
    """The phone's next JSON line, or NoAnswerError naming the socket (``closed`` if the connection ends)."""
    try:
        line = lines.readline()
    except TimeoutError:
        raise NoAnswerError(f"no answer from the phone within {timeout:g} s ({path})") from None
    except OSError as e:
        raise NoAnswerError(f"the control connection failed: {e.strerror or e} ({path})") from None
    if not line.endswith(b"\n"):
        raise NoAnswerError(f"{closed} ({path})")  # a line cut short is a connection cut short
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        raise NoAnswerError(f"the phone answered with something other than a JSON object ({path}): {line[:80]!r}")
    return message
