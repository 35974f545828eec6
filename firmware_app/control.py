"""The control socket: JSON lines over a Unix socket, for the CLI, field technicians and tests.

A request is one JSON object per line, ``{"cmd": "answer"}``; the reply is one line,
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``. ``{"cmd": "events"}`` turns the
connection into the phone's event stream. The socket is mode 0660 and only root, the service's own user
and members of its group may use it (checked with SO_PEERCRED as well as by the file mode).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Any

from firmware_app.errors import CommandError, FirmwareAppError
from firmware_app.model import ButtonEvent, Gesture
from firmware_app.phone import Phone

log = logging.getLogger("firmware_app.control")

MAX_LINE = 64 * 1024


class ControlServer:
    def __init__(self, phone: Phone, path: str | os.PathLike[str]) -> None:
        self.phone = phone
        self.path = Path(path)
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()

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
                    await self._stream_events(reader, writer)
                    return
                await _send(writer, await self.handle(request))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # the phone is stopping: end the connection quietly
        finally:
            self._handlers.discard(handler)
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


def request(path: str | os.PathLike[str], message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    with _connect(path, timeout) as sock:
        sock.sendall(json.dumps(message).encode() + b"\n")
        reply = sock.makefile("rb").readline()
    if not reply:
        raise FirmwareAppError("the phone closed the control connection without answering")
    return json.loads(reply)


def stream_events(path: str | os.PathLike[str]):
    """Yield the phone's events (the first item is the current status) until the phone stops."""
    sock = _connect(path, None)
    with sock:
        sock.sendall(b'{"cmd": "events"}\n')
        for line in sock.makefile("rb"):
            yield json.loads(line)


def _connect(path: str | os.PathLike[str], timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise FirmwareAppError(f"the phone is not running (no control socket at {path})") from None
    except PermissionError:
        sock.close()
        raise FirmwareAppError(f"permission denied on {path}: use root or the phone's group") from None
    return sock
