"""The CLI's waits and outcome lines.

Fake phones are Unix sockets in tmp_path that answer with scripted lines; the server side is the real
ControlServer around a stand-in phone whose operation lasts until the test lets it finish. No test depends
on how fast the machine is: a phone that never answers must be given up on whatever the clock says, and a
slow operation is released by the test, not by a timer.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_app import cli
from firmware_app.control import ControlServer
from tests.phone_process import FIRMWARE_APP

PENDING = b'{"pending": true}\n'
TRANSFERRED = {"call": 0, "target": "desk", "to": "sip:1003@pbx.example", "code": 200}


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


class FakePhone:
    """A control socket that reads one request per connection, sends ``replies`` and then closes the
    connection, or with ``hang`` keeps it open without a word until the test ends."""

    def __init__(self, path: Path, replies: list[bytes], *, hang: bool = False) -> None:
        self.path = path
        self.replies = replies
        self.hang = hang
        self.requests: list[dict[str, Any]] = []
        self._ended = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return  # closed by the test before anyone connected
        with conn:
            self.requests.append(json.loads(conn.makefile("rb").readline()))
            for reply in self.replies:
                conn.sendall(reply)
            if self.hang:
                self._ended.wait()

    def close(self) -> None:
        self._ended.set()
        self._listener.close()
        self._thread.join(5)


@pytest.fixture
def fake_phone(tmp_path: Path) -> Iterator[Callable[..., FakePhone]]:
    phones: list[FakePhone] = []

    def make(replies: list[bytes], *, hang: bool = False) -> FakePhone:
        phones.append(FakePhone(tmp_path / f"control{len(phones)}.sock", replies, hang=hang))
        return phones[-1]

    yield make
    for phone in phones:
        phone.close()


def run_cli(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, list[str], list[str]]:
    """Exit code, stdout lines and stderr lines of ``firmware-app --socket PATH ARGS``, run in this process."""
    code = cli.main(["--socket", str(path), *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


# --- the timeout path ---------------------------------------------------------------------------------


def test_a_phone_that_never_answers_ends_the_transfer_command_with_one_line(fake_phone):
    phone = fake_phone([], hang=True)
    result = subprocess.run(
        [*FIRMWARE_APP, "--socket", str(phone.path), "--timeout", "0.2", "transfer", "desk"],
        capture_output=True, text=True, timeout=60,
    )
    assert (result.returncode, result.stdout) == (cli.EXIT_NO_ANSWER, "")
    assert result.stderr == f"firmware-app: no answer from the phone within 0.2 s ({phone.path})\n"
    # The phone was asked to say it is still at work well within the CLI's patience.
    [request] = phone.requests
    assert request["cmd"] == "transfer" and request["target"] == "desk"
    assert 0 < request["keepalive"] < 0.2


def test_keepalives_then_silence_is_no_answer(fake_phone, capsys):
    phone = fake_phone([PENDING, PENDING], hang=True)
    code, out, err = run_cli(capsys, phone.path, "--timeout", "0.2", "transfer", "desk")
    assert (code, out) == (cli.EXIT_NO_ANSWER, [])
    assert err == [f"firmware-app: no answer from the phone within 0.2 s ({phone.path})"]


def test_the_event_stream_waits_for_its_first_reply_only_so_long(fake_phone, capsys):
    phone = fake_phone([], hang=True)
    code, out, err = run_cli(capsys, phone.path, "--timeout", "0.2", "events")
    assert (code, out) == (cli.EXIT_NO_ANSWER, [])
    assert err == [f"firmware-app: no answer from the phone within 0.2 s ({phone.path})"]


# --- outcome lines ------------------------------------------------------------------------------------


def test_a_long_transfer_is_waited_for_through_the_keepalives(fake_phone, capsys):
    phone = fake_phone([PENDING, PENDING, PENDING, line({"ok": True, "result": TRANSFERRED})])
    code, out, err = run_cli(capsys, phone.path, "transfer", "desk")
    assert (code, err) == (0, [])
    assert [json.loads(x) for x in out] == [TRANSFERRED]


def test_a_failed_transfer_ends_with_the_phones_reason(fake_phone, capsys):
    reason = "transfer to busy failed: 486 Busy Here; the caller is back on the line"
    phone = fake_phone([PENDING, line({"ok": False, "error": reason})])
    code, out, err = run_cli(capsys, phone.path, "transfer", "busy")
    assert (code, out, err) == (cli.EXIT_FAILED, [], [f"firmware-app: {reason}"])


def test_an_action_with_no_result_still_says_it_was_done(fake_phone, capsys):
    phone = fake_phone([line({"ok": True, "result": None})])
    assert run_cli(capsys, phone.path, "action", "hold_toggle") == (0, ["hold_toggle: done"], [])


@pytest.mark.parametrize(
    "replies, says",
    [
        ([], "the phone closed the control connection without answering"),
        ([PENDING, b'{"ok": tr'], "the phone closed the control connection without answering"),
        ([b"Welcome!\n"], "the phone answered with something other than a JSON object"),
    ],
    ids=["closed", "cut-short", "garbled"],
)
def test_a_phone_that_closes_or_garbles_is_named(fake_phone, capsys, replies, says):
    phone = fake_phone(replies)
    code, out, err = run_cli(capsys, phone.path, "answer")
    assert (code, out, len(err)) == (cli.EXIT_NO_ANSWER, [], 1)
    assert err[0].startswith(f"firmware-app: {says} ({phone.path})")


def test_a_phone_that_is_not_running_is_named(tmp_path, capsys):
    missing = tmp_path / "missing.sock"
    assert run_cli(capsys, missing, "status") == (
        cli.EXIT_NO_ANSWER, [], [f"firmware-app: the phone is not running (no control socket at {missing})"]
    )
    stale = tmp_path / "stale.sock"  # left by a phone that was killed: the file, but nobody listening
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))
    assert run_cli(capsys, stale, "hangup") == (
        cli.EXIT_NO_ANSWER, [], [f"firmware-app: the phone is not running (nothing listens on {stale})"]
    )


def test_an_event_stream_that_ends_without_stopping_is_reported(fake_phone, capsys):
    status = {"ok": True, "result": {"state": "idle"}}
    ringing = {"event": "state", "state": "ringing"}
    phone = fake_phone([line(status), line(ringing)])
    code, out, err = run_cli(capsys, phone.path, "events")
    assert [json.loads(x) for x in out] == [status, ringing]
    assert (code, err) == (
        cli.EXIT_NO_ANSWER, [f"firmware-app: the phone ended the event stream without stopping ({phone.path})"]
    )

    phone = fake_phone([line(status), line({"event": "stopped"})])
    code, out, err = run_cli(capsys, phone.path, "events")
    assert (code, err, json.loads(out[-1])) == (0, [], {"event": "stopped"})


# --- the server side: the real ControlServer around a stand-in phone ----------------------------------


class SlowPhone:
    """Stands in for Phone: its actions run until the test calls release(); it can emit events."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.finished = threading.Event()
        self._release = asyncio.Event()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    async def run_action(self, name: str) -> dict[str, str]:
        await self._release.wait()
        self.finished.set()
        return {"done": name}

    def release(self) -> None:
        self.loop.call_soon_threadsafe(self._release.set)

    def status(self) -> dict[str, str]:
        return {"state": "in_call"}

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def emit(self, event: str) -> None:
        for listener in list(self._listeners):
            listener({"event": event})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ControlServer, SlowPhone]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    phone = SlowPhone(loop)
    control = ControlServer(phone, tmp_path / "control.sock")  # type: ignore[arg-type]
    asyncio.run_coroutine_threadsafe(control.start(), loop).result(10)
    yield control, phone
    phone.release()
    asyncio.run_coroutine_threadsafe(control.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def connect(control: ControlServer, request: dict[str, Any]) -> tuple[socket.socket, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)  # a bound for a broken server only: every read here is answered at once or released
    sock.connect(str(control.path))
    sock.sendall(line(request))
    return sock, sock.makefile("rb")


def test_the_server_says_it_is_at_work_until_the_operation_ends(server):
    control, phone = server
    sock, replies = connect(control, {"cmd": "transfer", "target": "desk", "keepalive": 0.01})
    with sock:
        assert json.loads(replies.readline()) == {"pending": True}
        phone.release()
        while (reply := json.loads(replies.readline())) == {"pending": True}:
            pass
    assert reply == {"ok": True, "result": {"done": "transfer:desk"}}


def test_a_client_going_away_does_not_cut_the_operation_short(server):
    control, phone = server
    sock, replies = connect(control, {"cmd": "action", "name": "transfer:agents", "keepalive": 0.01})
    with sock:
        assert json.loads(replies.readline()) == {"pending": True}
    phone.release()
    assert phone.finished.wait(30), "the operation was abandoned with its client"


def test_a_bad_keepalive_is_refused(server):
    control, _ = server
    sock, replies = connect(control, {"cmd": "status", "keepalive": "soon"})
    with sock:
        error = "bad request: keepalive: expected seconds, got 'soon'"
        assert json.loads(replies.readline()) == {"ok": False, "error": error}


def test_an_event_stream_gets_the_stopped_event_before_the_server_stops(server):
    control, phone = server
    sock, events = connect(control, {"cmd": "events"})
    with sock:
        assert json.loads(events.readline()) == {"ok": True, "result": {"state": "in_call"}}

        async def stop_like_the_app() -> None:
            phone.emit("stopped")  # Phone.stop() ends with this, then the app stops the control server
            await control.stop()

        asyncio.run_coroutine_threadsafe(stop_like_the_app(), phone.loop).result(30)
        assert json.loads(events.readline()) == {"event": "stopped"}
        assert events.readline() == b""


# --- a real phone -------------------------------------------------------------------------------------


def test_a_real_phones_event_stream_ends_with_stopped_and_then_its_socket_is_named(phone_factory):
    phone = phone_factory().start()
    events = subprocess.Popen(
        [*FIRMWARE_APP, "--socket", str(phone.socket), "events"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=phone.env,
    )
    assert events.stdout is not None
    assert json.loads(events.stdout.readline())["ok"] is True  # the stream is open
    assert phone.stop(signal.SIGTERM) == 0
    out, err = events.communicate(timeout=30)
    assert (events.returncode, err) == (0, "")
    assert json.loads(out.splitlines()[-1])["event"] == "stopped"

    result = phone.cli("status", check=False)
    assert (result.returncode, result.stdout) == (cli.EXIT_NO_ANSWER, "")
    assert result.stderr == f"firmware-app: the phone is not running (no control socket at {phone.socket})\n"


def test_the_cli_has_no_traceback_for_a_wrong_timeout():
    result = subprocess.run(
        [*FIRMWARE_APP, "--timeout", "soon", "status"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = "firmware-app: error: argument --timeout: expected a positive number of seconds, got 'soon'"
    assert result.stderr.splitlines()[-1] == error
