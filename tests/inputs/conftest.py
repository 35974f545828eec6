"""A phone without its SIP engine, for the input plugins: the real configuration loading, plugin host and
:class:`Phone` (its loop, ``input`` and event stream), with the engine's reports played by the test."""

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
from firmware_app.model import PhoneState, Registration, RegistrationState
from firmware_app.phone import Phone
from firmware_app.plugins import PluginHost


class Rig:
    """A started phone (minus the engine) and every event it put on its stream."""

    def __init__(self, phone: Phone, host: PluginHost) -> None:
        self.phone, self.host = phone, host
        self.events: list[dict[str, Any]] = []
        phone.subscribe(self.events.append)

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

    def set_state(self, state: PhoneState) -> None:
        """What the phone does when its calls change: new state, then the hook."""
        previous, self.phone.state = self.phone.state, state
        self.host.phone_state_changed(state, previous)

    def set_registered(self, registered: bool) -> None:
        state = RegistrationState.REGISTERED if registered else RegistrationState.FAILED
        self.phone.registration = Registration(state)
        self.host.registration_changed(self.phone.registration)


def write_config(tmp_path: Path, plugins: list[str], body: str, modules: tuple[str, ...] = ()) -> Path:
    path = tmp_path / "config.toml"
    only = ", ".join(f'"{p}"' for p in plugins)
    extra = ", ".join(f'"{m}"' for m in modules)
    path.write_text(
        f'[account]\nregistrar = "pbx.test"\nuser = "1000"\n\n[plugins]\nonly = [{only}]\nmodules = [{extra}]\n\n{body}'
    )
    return path


@pytest.fixture
def phone_rig(tmp_path: Path) -> Callable[..., Any]:
    """``async with phone_rig(["softphone_gpio"], toml) as rig``: configure, start, and shut the plugins down."""

    @asynccontextmanager
    async def start(
        plugins: list[str], body: str = "", *, modules: tuple[str, ...] = (), before: Callable[[PluginHost], None] = lambda h: None
    ) -> AsyncIterator[Rig]:
        path = write_config(tmp_path, ["softphone_calls", "softphone_buttons", *plugins], body, modules)
        config, host = app.prepare(str(path), secrets=False, strict=True)
        before(host)  # e.g. hand a plugin its fake hardware
        phone = Phone(config, host)
        phone.loop = asyncio.get_running_loop()
        rig = Rig(phone, host)
        host.startup(phone)
        try:
            yield rig
        finally:
            host.shutdown(phone)
            await asyncio.sleep(0)

    return start


@pytest.fixture
def caplog_inputs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="firmware_app")
    yield caplog
