"""The phone's own decisions, through the fake engine: milliseconds, no PJSUA2, no network.

Admission, busy refusal, state derivation, registration backoff, transfer bookkeeping, 491 retries and plugin
isolation. The wire itself is judged by the real-peer tests (tests/peers, test_*_sip.py).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from firmware_app import config as cfg
from firmware_app import hookimpl
from firmware_app import phone as phone_module
from firmware_app.errors import CommandError
from firmware_app.model import Call, CallState, PhoneState, RegistrationState
from firmware_app.phone import Phone
from firmware_app.plugins import PluginHost
from firmware_app.testing import FakeEngine, FakeEngineFactory, settle
from tests.test_config import write

ACCOUNT = """\
[account]
registrar = "127.0.0.1:5060"
user = "1000"
aliases = ["reception"]
retry_interval = 7
retry_max = 20
"""


class Recorder:
    """A plugin that writes down what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, CallState, CallState | None]] = []
        self.states: list[PhoneState] = []
        self.waiting: list[tuple[int, int]] = []

    @hookimpl
    def softphone_call_state_changed(self, call: Call, previous: CallState | None) -> None:
        self.calls.append((call.id, call.state, previous))

    @hookimpl
    def softphone_phone_state_changed(self, state: PhoneState, previous: PhoneState) -> None:
        self.states.append(state)


class Broken:
    @hookimpl
    def softphone_call_state_changed(self, call: Call, previous: CallState | None) -> None:
        raise RuntimeError("a plugin bug")


Scenario = Callable[[Phone, FakeEngine, Recorder], Awaitable[Any]]


def run(tmp_path: Path, scenario: Scenario, *, config: str = ACCOUNT, plugins: tuple[object, ...] = ()) -> Any:
    """Start a phone on a fake engine, registered, run ``scenario`` and stop the phone."""
    recorder = Recorder()
    host = PluginHost()
    for i, plugin in enumerate((recorder, *plugins)):
        host.register(plugin, f"test-plugin-{i}")
    factory = FakeEngine.factory()

    async def main() -> Any:
        phone = Phone(cfg.load(write(tmp_path, config)), host, engine_factory=factory)
        await phone.start()
        engine = _engine(factory)
        engine.registered()
        await settle()
        try:
            return await scenario(phone, engine, recorder)
        finally:
            await phone.stop()

    return asyncio.run(main())


def _engine(factory: FakeEngineFactory) -> FakeEngine:
    assert factory.engine is not None
    return factory.engine


async def answered_call(phone: Phone, engine: FakeEngine) -> int:
    """A caller rings through the registrar and the phone answers; the call's id."""
    call_id = engine.incoming()
    await settle()
    phone.answer()
    await settle()
    return call_id


# --- admission -------------------------------------------------------------------------------------------


def test_a_call_from_the_registrar_for_the_phone_rings(tmp_path):
    async def scenario(phone: Phone, engine: FakeEngine, seen: Recorder) -> None:
        call_id = engine.incoming("sip:1001@127.0.0.1")
        await settle()
        assert engine.sent("ring") == [(call_id,)]
        assert phone.state is PhoneState.RINGING
        assert seen.calls == [(call_id, CallState.RINGING, None)]

    run(tmp_path, scenario)


@pytest.mark.parametrize(
    ("source", "to_user", "code"),
    [
        ("127.0.0.2:5060", "1000", 403),  # not a trusted source
        ("127.0.0.1:5060", "1001", 404),  # someone else
        ("127.0.0.1:5060", "", 404),  # a request URI without a user names nobody
    ],
)
def test_a_refused_call_never_reaches_plugins(tmp_path, source, to_user, code):
    async def scenario(phone: Phone, engine: FakeEngine, seen: Recorder) -> None:
        call_id = engine.incoming(source=source, to_user=to_user)
        await settle()
        assert engine.sent("reject") == [(call_id, code)]
        assert phone.calls() == [] and seen.calls == [] and phone.state is PhoneState.IDLE

    run(tmp_path, scenario)


def test_an_alias_rings_the_phone(tmp_path):
    async def scenario(phone: Phone, engine: FakeEngine, seen: Recorder) -> None:
        call_id = engine.incoming(to_user="reception")
        await settle()
        assert engine.sent("ring") == [(call_id,)]

    run(tmp_path, scenario)


def test_a_second_caller_gets_busy_and_is_never_announced(tmp_path):
    async def scenario(phone: Phone, engine: FakeEngine, seen: Recorder) -> None:
        events: list[dict[str, Any]] = []
        phone.subscribe(events.append)
        first = engine.incoming("sip:1001@127.0.0.1")
        second = engine.incoming("sip:1002@127.0.0.1")
        await settle()
        assert engine.sent("reject") == [(second, 486)]
        assert [c.id for c in phone.calls()] == [first]
        assert all(cid != second for cid, _, _ in seen.calls)
        waiting = [e for e in events if e["event"] == "call_waiting"]
        assert [(e["call_id"], e["busy_with"], e["code"]) for e in waiting] == [(second, first, 486)]

    run(tmp_path, scenario)


# --- the phone's state -----------------------------------------------------------------------------------


def test_the_phone_state_follows_its_calls(tmp_path):
    async def scenario(phone: Phone, engine: FakeEngine, seen: Recorder) -> None:
        call_id = await answered_call(phone, engine)
        assert phone.state is PhoneState.IN_CALL
        assert await phone.hold(call_id) is True
        await settle()
        assert phone.state is PhoneState.ON_HOLD
        phone.set_transferring(call_id, True)
        assert phone.state is PhoneState.TRANSFERRING
        phone.set_transferring(call_id, False)
        phone.resume(call_id)
        await settle()
        assert phone.state is PhoneState.IN_CALL
        engine.remote_hangup(call_id)
        await settle()
        assert phone.state is PhoneState.IDLE and phone.calls() == []
        assert seen.states == [
            PhoneState.RINGING, PhoneState.IN_CALL, PhoneState.ON_HOLD, PhoneState.TRANSFERRING,
            PhoneState.ON_HOLD, PhoneState.IN_CALL, PhoneState.IDLE,
        ]

    run(tmp_path, scenario)


def test_commands_on_a_call_that_is_gone_are_refused_clearly(tmp_path):
    async def scenario(phone: Phone, engine: FakeEngine, seen: Recorder) -> None:
        with pytest.raises(CommandError, match="no call"):
            phone.answer()
        with pytest.raises(CommandError, match="no call 42"):
            phone.hangup(42)

    run(tmp_path, scenario)


# --- registration ----------------------------------------------------------------------------------------


def retry_delays(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().rsplit("retrying in ", 1)[1] for r in caplog.records if "retrying in" in r.getMessage()]


def test_wrong_credentials_back_off_doubling_up_to_retry_max(tmp_path, caplog):
    caplog.set_level(logging.ERROR, "firmware_app.phone")

    async def scenario(phone: Phone, engine: FakeEngine, seen: Recorder) -> None:
        for _ in range(4):
            engine.registration_failed(403, "Forbidden")
            await settle()
        assert phone.registration.state is RegistrationState.FAILED
        engine.registered()
        await settle()
        engine.registration_failed(401, "Unauthorized")
        await settle()

    run(tmp_path, scenario)
    # retry_interval 7, doubling, capped at retry_max 20; a success starts again from the interval.
    assert retry_delays(caplog) == ["7 s", "14 s", "20 s", "20 s", "7 s"]


def test_an_unreachable_registrar_is_retried_every_interval_through_the_secondary(tmp_path, caplog):
    caplog.set_level(logging.ERROR, "firmware_app.phone")
    config = ACCOUNT + 'secondary_registrar = "127.0.0.2:5060"\n'

    async def scenario(phone: Phone, engine: FakeEngine, seen: Recorder) -> None:
        for _ in range(3):
            engine.registration_failed(408, "Request Timeout")
            await settle()
        assert len(engine.sent("switch_registrar")) == 3

    run(tmp_path, scenario, config=config)
    failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("registration failed")]
    assert [m.split(": ", 1)[1] for m in failures] == [
        "408 Request Timeout (next attempt through 127.0.0.2:5060); retrying in 7 s",
        "408 Request Timeout (next attempt through 127.0.0.1:5060); retrying in 7 s",
        "408 Request Timeout (next attempt through 127.0.0.2:5060); retrying in 7 s",
    ]


# --- transfers and glare ---------------------------------------------------------------------------------


def test_a_refer_waits_for_the_first_final_outcome(tmp_path):
    async def scenario(phone: Phone, engine: FakeEngine, seen: Recorder) -> None:
        call_id = await answered_call(phone, engine)
        progress: list[tuple[int, str]] = []
        task = asyncio.ensure_future(phone.refer(call_id, "sip:1003@127.0.0.1", lambda c, r: progress.append((c, r))))
        await settle()
        assert engine.sent("transfer") == [(call_id, "sip:1003@127.0.0.1")]
        engine.transfer_progress(call_id, 100, "Trying")
        engine.transfer_progress(call_id, 200, "OK", final=True)
        engine.transfer_progress(call_id, 500, "synthetic end of subscription", final=True)
        assert await asyncio.wait_for(task, 1) == (200, "OK")
        assert progress == [(100, "Trying")]

    run(tmp_path, scenario)


def test_a_refer_or_a_hold_met_by_491_is_sent_again(tmp_path, monkeypatch):
    monkeypatch.setattr(phone_module, "_glare_delay", lambda owner: 0.0)

    async def scenario(phone: Phone, engine: FakeEngine, seen: Recorder) -> None:
        call_id = await answered_call(phone, engine)
        engine.reinvite_answers = [491]
        assert await asyncio.wait_for(phone.hold(call_id), 1) is True
        assert engine.sent("hold") == [(call_id,), (call_id,)]

        refer = asyncio.ensure_future(phone.refer(call_id, "sip:1003@127.0.0.1"))
        await settle()
        engine.transfer_progress(call_id, 491, "Request Pending", final=True)
        await settle(20)
        assert len(engine.sent("transfer")) == 2
        engine.transfer_progress(call_id, 200, "OK", final=True)
        assert await asyncio.wait_for(refer, 1) == (200, "OK")

    run(tmp_path, scenario)


def test_a_call_ending_during_a_transfer_ends_the_wait(tmp_path):
    async def scenario(phone: Phone, engine: FakeEngine, seen: Recorder) -> None:
        call_id = await answered_call(phone, engine)
        refer = asyncio.ensure_future(phone.refer(call_id, "sip:1003@127.0.0.1"))
        await settle()
        engine.remote_hangup(call_id)
        assert await asyncio.wait_for(refer, 1) == (0, "the call ended during the transfer")

    run(tmp_path, scenario)


# --- plugins ---------------------------------------------------------------------------------------------


def test_a_failing_plugin_is_named_and_the_call_still_rings(tmp_path, caplog):
    async def scenario(phone: Phone, engine: FakeEngine, seen: Recorder) -> None:
        call_id = engine.incoming()
        await settle()
        assert engine.sent("ring") == [(call_id,)]
        assert seen.calls == [(call_id, CallState.RINGING, None)]

    run(tmp_path, scenario, plugins=(Broken(),))
    assert "plugin test-plugin-1 failed in softphone_call_state_changed" in caplog.text


def test_the_phone_runs_on_the_fake_engine_without_pjsua2(tmp_path):
    assert "pjsua2" not in sys.modules or sys.modules["pjsua2"] is not None  # sanity: nothing blocked it here
    import subprocess

    code = (
        "import sys; sys.modules['pjsua2'] = None; import firmware_app.phone, firmware_app.testing; "
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr



def test_a_hang_up_before_the_callers_ack_waits_for_it_and_sends_one_bye(tmp_path):
    async def scenario(phone: Phone, engine: FakeEngine, seen: Recorder) -> None:
        engine.ack_later = True
        call_id = await answered_call(phone, engine)
        assert phone.get_call(call_id).state is CallState.CONNECTING
        phone.hangup()  # a control press right after answering
        await settle()
        assert engine.sent("hangup") == []  # not while PJSIP waits for the ACK
        engine.ack(call_id)
        await settle()
        assert engine.sent("hangup") == [(call_id,)]

    run(tmp_path, scenario)
