"""A phone on the fake engine, for the input plugins: the real configuration loading, plugin host and
:class:`Phone`, with the far end and the registrar played by :class:`firmware_app.testing.FakeEngine`. The
phone's states come from real calls on that engine, so the plugins hear of them in the phone's own order."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from firmware_app import app
from firmware_app.model import CallState, PhoneState
from firmware_app.phone import Phone
from firmware_app.plugins import PluginHost
from firmware_app.testing import FakeEngine, settle


class Rig:
    """A started phone on the fake engine, and every event it put on its stream."""

    def __init__(self, phone: Phone, host: PluginHost, engine: FakeEngine, events: list[dict[str, Any]]) -> None:
        self.phone, self.host, self.engine = phone, host, engine
        self.events = events  # the phone's event stream since before it started

    def inputs(self) -> list[tuple[str, str, str]]:
        return [(e["source"], e["button"], e["gesture"]) for e in self.events if e["event"] == "input"]

    def device_states(self, source: str) -> list[tuple[str, str]]:
        return [(e["device"], e["state"]) for e in self.events if e["event"] == "input_device" and e["source"] == source]

    async def wait(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while not (result := predicate()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or predicate}; events: {self.events}")
            await asyncio.sleep(0.005)
        return result

    async def wait_inputs(self, count: int, timeout: float = 5.0) -> list[tuple[str, str, str]]:
        await self.wait(lambda: len(self.inputs()) >= count, timeout, f"{count} input events")
        return self.inputs()

    async def witness(self, event: tuple[str, str, str], timeout: float = 5.0) -> list[tuple[str, str, str]]:
        """Wait for ``event`` and return every input event so far.

        The test causes the witness after the input it checks, and picks one that nothing before it can also
        produce (another control, or another gesture). Inputs reach the phone in order, so once the witness
        is in, the input before it has been processed: comparing the whole list with what was expected shows
        that nothing was missed and that nothing else happened. A check that nothing happened after a fixed
        sleep could only pass."""
        await self.wait(lambda: event in self.inputs(), timeout, f"the witness {event}")
        return self.inputs()

    async def set_state(self, target: PhoneState) -> None:
        """Bring the phone to ``target`` the way calls do: a caller rings, the phone answers, holds, transfers,
        hangs up (the far end and the registrar are the fake engine)."""
        phone, engine = self.phone, self.engine
        for _ in range(4):
            if phone.state is target:
                return
            calls = phone.calls()
            call = calls[0] if calls else None
            if target is PhoneState.IDLE or (target is PhoneState.RINGING and call is not None):
                for c in calls:
                    phone.hangup(c.id)
            elif target is PhoneState.RINGING:
                engine.incoming("sip:1001@127.0.0.1")
            elif call is None:
                engine.remote_answer(phone.dial("1001"))
            elif call.state is CallState.RINGING:
                phone.answer(call.id)
            elif target is PhoneState.IN_CALL and call.state is CallState.HELD:
                phone.resume(call.id)
            elif call.state is CallState.TRANSFERRING:
                phone.set_transferring(call.id, False)
            elif target is PhoneState.ON_HOLD:
                assert await phone.hold(call.id), "the fake engine did not confirm the hold"
            elif target is PhoneState.TRANSFERRING:
                phone.set_transferring(call.id, True)
            await settle()
        raise AssertionError(f"the phone did not get from {phone.state} to {target}")

    async def set_registered(self, registered: bool) -> None:
        if registered:
            self.engine.registered()
        else:
            self.engine.registration_failed(503, "Service Unavailable")
        await settle()


def write_config(tmp_path: Path, plugins: list[str], body: str, modules: tuple[str, ...] = ()) -> Path:
    path = tmp_path / "config.toml"
    only = ", ".join(f'"{p}"' for p in plugins)
    extra = ", ".join(f'"{m}"' for m in modules)
    path.write_text(
        f'[account]\nregistrar = "127.0.0.1:5060"\nuser = "1000"\n\n[plugins]\nonly = [{only}]\nmodules = [{extra}]\n\n{body}'
    )
    return path


@pytest.fixture
def phone_rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``async with phone_rig(["softphone_gpio"], toml) as rig``: configure, start, and shut the plugins down.

    What the plugins keep across restarts (volume, DND, recent calls) goes to the test's folder."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))

    @asynccontextmanager
    async def start(
        plugins: list[str], body: str = "", *, modules: tuple[str, ...] = (), before: Callable[[PluginHost], None] = lambda h: None
    ) -> AsyncIterator[Rig]:
        path = write_config(tmp_path, ["softphone_calls", "softphone_buttons", *plugins], body, modules)
        config, host = app.prepare(str(path), secrets=False, strict=True)
        before(host)  # e.g. hand a plugin its fake hardware
        factory = FakeEngine.factory()
        phone = Phone(config, host, engine_factory=factory)
        events: list[dict[str, Any]] = []
        phone.subscribe(events.append)  # from the start: the plugins' first events too
        await phone.start()
        assert factory.engine is not None
        rig = Rig(phone, host, factory.engine, events)
        try:
            yield rig
        finally:
            await phone.stop()

    return start


@pytest.fixture
def caplog_inputs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="firmware_app")
    yield caplog
