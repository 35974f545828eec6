"""systemd readiness: READY=1 once the engine is up, STATUS= lines, WATCHDOG=1 only while the engine answers."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from types import SimpleNamespace

import pytest

from firmware_app import app
from firmware_app.phone import ENGINE_STALL_S, engine_problem
from firmware_app.sdnotify import Notifier
from tests.phone_process import wait


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    messages: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except socket.timeout:
                return messages

    yield path, drain
    sock.close()


def test_ready_status_watchdog_and_stopping(phone_factory, notify_socket, baresip_factory, kamailio):
    path, drain = notify_socket
    phone = phone_factory(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
    phone.start()
    wait(lambda: sum("WATCHDOG=1" in m for m in drain()) >= 3, 5, "three watchdog pings", phone)
    messages = drain()
    ready = next(i for i, m in enumerate(messages) if "READY=1" in m)
    assert all("WATCHDOG=1" not in m for m in messages[:ready]), "a ping before READY"
    # READY=1 carries the status of the moment; registration may come before or after it
    assert any(line.startswith("STATUS=registered") for m in messages for line in m.splitlines()), messages
    caller = baresip_factory("1001")
    caller.dial(kamailio.uri("1000"))
    phone.wait_state("ringing")
    wait(lambda: any("STATUS=registered, ringing" in m for m in drain()), 5, "a ringing status", phone)
    assert phone.stop() == 0
    assert any("STOPPING=1" in m for m in drain())


class FakeEngine:
    def __init__(self, heartbeat: float, alive: bool = True) -> None:
        self.heartbeat, self.alive = heartbeat, alive


def run_watchdog(engine, checks=3, interval=0.01) -> list[str]:
    """What the watchdog sent systemd while it asked the phone's health ``checks`` times."""
    sent: list[str] = []
    notifier = SimpleNamespace(notify=lambda *lines: sent.extend(lines))

    async def main() -> None:
        asked: asyncio.Queue[None] = asyncio.Queue()

        def health():
            asked.put_nowait(None)
            # The phone's health less its call table (covered against real peers): the engine's part of it.
            return engine_problem(engine)

        task = asyncio.ensure_future(app._watchdog(SimpleNamespace(health=health), notifier, interval))
        try:
            for _ in range(checks):
                await asyncio.wait_for(asked.get(), 5)  # the watchdog acts on each answer before it sleeps
        finally:
            task.cancel()

    asyncio.run(main())
    return sent


def test_watchdog_pings_while_the_engine_comes_back_in_time():
    assert run_watchdog(FakeEngine(time.monotonic())) == ["WATCHDOG=1"] * 3


def test_watchdog_is_withheld_from_a_stalled_or_dead_engine(caplog):
    stalled = FakeEngine(time.monotonic() - ENGINE_STALL_S - 1)
    assert run_watchdog(stalled) == []
    assert run_watchdog(FakeEngine(time.monotonic(), alive=False)) == []
    assert "the SIP engine is not responding" in caplog.text


def test_notifier_speaks_to_abstract_sockets(monkeypatch):
    name = f"firmware-app-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(1)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = Notifier()
        notifier.notify("READY=1", "STATUS=ok")
        assert server.recv(100) == b"READY=1\nSTATUS=ok"
        notifier.close()
    finally:
        server.close()
