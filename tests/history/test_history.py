"""The call history plugin in a real phone on the fake SIP engine: what each kind of call leaves, the file.

Times come from a clock the test holds (the plugin's ``clock``), so durations do not depend on how fast the
test runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from firmware_app import app
from firmware_app.errors import ConfigError
from firmware_app.model import CallState, PhoneState, TransferState, TransferStatus
from firmware_app.plugins import PluginHost
from firmware_app.testing import settle
from tests.inputs.conftest import Rig, write_config

PLUGINS = ["softphone_history"]
CALLER = "sip:1001@127.0.0.1"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def with_clock(clock: Clock):
    def before(host: PluginHost) -> None:
        host.pm.get_plugin("softphone_history").clock = clock

    return before


def toml(size: int | None = None, file: str | None = "history.json", extra: str = "") -> str:
    body = "[history]\n"
    if size is not None:
        body += f"size = {size}\n"
    if file is not None:
        body += f'file = "{file}"\n'
    return body + extra


def at(iso: str | None) -> float | None:
    """An entry's time as seconds, checking it carries its offset."""
    if iso is None:
        return None
    t = datetime.fromisoformat(iso)
    assert t.utcoffset() is not None, iso
    return t.timestamp()


def history_events(rig: Rig) -> list[dict[str, Any]]:
    return [e for e in rig.events if e["event"] == "call_history"]


async def written(rig: Rig, count: int) -> list[dict[str, Any]]:
    """Wait for ``count`` call_history events; the history action's answer then."""
    await rig.wait(lambda: len(history_events(rig)) >= count, what=f"{count} call_history events")
    return await rig.phone.run_action("history")


async def answered_call(rig: Rig, clock: Clock, remote: str = CALLER, talk: float = 10.0) -> int:
    call_id = rig.engine.incoming(remote)
    await settle()
    rig.phone.answer(call_id)
    await rig.wait(lambda: rig.phone.state is PhoneState.IN_CALL, what="in call")
    clock.advance(talk)
    return call_id


async def missed_call(rig: Rig, remote: str = CALLER) -> None:
    call_id = rig.engine.incoming(remote)
    await settle()
    rig.engine.remote_hangup(call_id, 487, "Request Terminated")
    await rig.wait(lambda: rig.phone.state is PhoneState.IDLE, what="idle")


def file_data(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# --- what each call leaves -----------------------------------------------------------------------------


async def test_an_answered_incoming_call_with_its_duration(phone_rig, tmp_path: Path) -> None:
    clock = Clock()
    async with phone_rig(PLUGINS, toml(), before=with_clock(clock)) as rig:
        assert rig.phone.status()["history"] == []
        call_id = rig.engine.incoming(CALLER, remote_name="Alice")
        await settle()
        clock.advance(3)
        rig.phone.answer(call_id)
        await rig.wait(lambda: rig.phone.state is PhoneState.IN_CALL, what="in call")
        clock.advance(42.5)
        rig.engine.remote_hangup(call_id)
        [entry] = await written(rig, 1)

        assert {k: v for k, v in entry.items() if k not in ("start", "answered", "end")} == {
            "direction": "incoming",
            "remote_uri": CALLER,
            "remote_name": "Alice",
            "duration": 42.5,
            "result": "answered",
            "code": 200,
            "reason": "Normal call clearing",
            "ended_by": None,  # the core does not say who sent the BYE
            "transferred_to": None,
            "sip_call_id": "fake-1",
        }
        assert (at(entry["start"]), at(entry["answered"]), at(entry["end"])) == (T0, T0 + 3, T0 + 45)  # to the second
        [event] = history_events(rig)
        assert {k: v for k, v in event.items() if k not in ("event", "time")} == entry
        assert rig.phone.status()["history"] == [entry]
        assert file_data(tmp_path / "history.json") == {"version": 1, "calls": [entry]}


async def test_a_missed_call(phone_rig) -> None:
    clock = Clock()
    async with phone_rig(PLUGINS, toml(), before=with_clock(clock)) as rig:
        call_id = rig.engine.incoming(CALLER)
        await settle()
        clock.advance(20)
        rig.engine.remote_hangup(call_id, 487, "Request Terminated")
        [entry] = await written(rig, 1)
        assert (entry["result"], entry["ended_by"], entry["code"]) == ("missed", "remote", 487)
        assert (entry["answered"], entry["duration"]) == (None, None)
        assert (at(entry["start"]), at(entry["end"])) == (T0, T0 + 20)


async def test_a_rejected_call(phone_rig) -> None:
    async with phone_rig(PLUGINS, toml(), before=with_clock(Clock())) as rig:
        call_id = rig.engine.incoming(CALLER)
        await settle()
        rig.phone.reject(call_id, 603)
        [entry] = await written(rig, 1)
        assert (entry["direction"], entry["result"], entry["ended_by"], entry["code"]) == ("incoming", "rejected", "local", 603)
        assert entry["duration"] is None


async def test_a_call_refused_busy_while_in_another_call(phone_rig) -> None:
    clock = Clock()
    async with phone_rig(PLUGINS, toml() + "\n[calls]\ncall_waiting = false\n", before=with_clock(clock)) as rig:
        first = await answered_call(rig, clock, talk=5)
        rig.engine.incoming("sip:1002@127.0.0.1", remote_name="Bob")
        [busy] = await written(rig, 1)
        assert [e["event"] for e in rig.events if e["event"] == "call_waiting"] == ["call_waiting"]
        assert {k: busy[k] for k in ("direction", "remote_uri", "remote_name", "result", "code", "ended_by", "duration")} == {
            "direction": "incoming",
            "remote_uri": "sip:1002@127.0.0.1",
            "remote_name": "Bob",
            "result": "busy",
            "code": 486,
            "ended_by": "local",
            "duration": None,
        }
        assert at(busy["start"]) == T0 + 5
        clock.advance(5)
        rig.phone.hangup(first)
        entries = await written(rig, 2)
        assert [(e["remote_uri"], e["result"], e["duration"]) for e in entries] == [
            (CALLER, "answered", 10.0),
            ("sip:1002@127.0.0.1", "busy", None),
        ]


async def test_an_outgoing_call_that_failed_busy(phone_rig) -> None:
    clock = Clock()
    async with phone_rig(PLUGINS, toml(), before=with_clock(clock)) as rig:
        call_id = rig.phone.dial("1003")
        await settle()
        clock.advance(2)
        rig.engine.remote_hangup(call_id, 486, "Busy Here")
        [entry] = await written(rig, 1)
        assert {k: entry[k] for k in ("direction", "remote_uri", "result", "code", "reason", "ended_by", "answered")} == {
            "direction": "outgoing",
            "remote_uri": rig.phone.complete_uri("1003"),
            "result": "failed",
            "code": 486,
            "reason": "Busy Here",
            "ended_by": "remote",
            "answered": None,
        }
        assert at(entry["end"]) == T0 + 2


@pytest.mark.parametrize("code", [487, 200])  # PJSIP's CANCEL ends with 487; the fake's hangup with 200
async def test_an_outgoing_call_given_up_before_the_answer_is_cancelled(phone_rig, code: int) -> None:
    async with phone_rig(PLUGINS, toml(), before=with_clock(Clock())) as rig:
        call_id = rig.phone.dial("1003")
        await settle()
        if code == 200:
            rig.phone.hangup(call_id)
        else:
            rig.engine.remote_hangup(call_id, code, "Request Terminated")
        [entry] = await written(rig, 1)
        assert (entry["result"], entry["ended_by"], entry["duration"]) == ("cancelled", "local", None)


async def test_an_answered_outgoing_call(phone_rig) -> None:
    clock = Clock()
    async with phone_rig(PLUGINS, toml(), before=with_clock(clock)) as rig:
        call_id = rig.phone.dial("1003")
        await settle()
        clock.advance(4)
        rig.engine.remote_answer(call_id)
        await rig.wait(lambda: rig.phone.get_call(call_id).state is CallState.ACTIVE, what="the answer")
        clock.advance(60)
        rig.phone.hangup(call_id)
        [entry] = await written(rig, 1)
        assert (entry["direction"], entry["result"], entry["duration"]) == ("outgoing", "answered", 60.0)
        assert at(entry["answered"]) == T0 + 4


# --- transfers -----------------------------------------------------------------------------------------

TRANSFER = '[transfer.targets.desk]\nuri = "1003"\n'
TRANSFER_PLUGINS = ["softphone_transfer", "softphone_history"]


def desk(rig: Rig) -> str:
    return rig.phone.complete_uri("1003")


async def test_a_blind_transfer_records_its_target(phone_rig) -> None:
    clock = Clock()
    async with phone_rig(TRANSFER_PLUGINS, toml(extra=TRANSFER), before=with_clock(clock)) as rig:
        call_id = await answered_call(rig, clock, talk=30)
        transfer = asyncio.ensure_future(rig.phone.run_action("transfer:desk"))
        await rig.wait(lambda: rig.engine.sent("transfer"), what="the REFER")
        rig.engine.transfer_progress(call_id, 100, "Trying")
        rig.engine.transfer_progress(call_id, 200, "OK", final=True)
        assert (await asyncio.wait_for(transfer, 5))["to"] == desk(rig)
        [entry] = await written(rig, 1)
        assert (entry["result"], entry["transferred_to"], entry["duration"]) == ("answered", desk(rig), 30.0)


async def test_a_transfer_succeeding_as_the_far_end_hangs_up_is_still_recorded(phone_rig) -> None:
    """The BYE is handled before the transfer plugin reports the success: the entry waits for it."""
    clock = Clock()
    async with phone_rig(TRANSFER_PLUGINS, toml(extra=TRANSFER), before=with_clock(clock)) as rig:
        call_id = await answered_call(rig, clock)
        transfer = asyncio.ensure_future(rig.phone.run_action("transfer:desk"))
        await rig.wait(lambda: rig.engine.sent("transfer"), what="the REFER")
        rig.engine.transfer_progress(call_id, 200, "OK", final=True)
        rig.engine.remote_hangup(call_id)  # posted before the transfer plugin hears of the 200
        await asyncio.wait_for(transfer, 5)
        [entry] = await written(rig, 1)
        assert entry["transferred_to"] == desk(rig)
        order = [(e["event"], e["state"]) for e in rig.events if e["event"] in ("call", "transfer")]
        assert order.index(("call", "ended")) < order.index(("transfer", "succeeded"))  # the case this test is for


async def test_a_failed_transfer_records_no_target(phone_rig) -> None:
    clock = Clock()
    async with phone_rig(TRANSFER_PLUGINS, toml(extra=TRANSFER), before=with_clock(clock)) as rig:
        call_id = await answered_call(rig, clock)
        transfer = asyncio.ensure_future(rig.phone.run_action("transfer:desk"))
        await rig.wait(lambda: rig.engine.sent("transfer"), what="the REFER")
        rig.engine.transfer_progress(call_id, 486, "Busy Here", final=True)
        with pytest.raises(Exception, match="failed"):
            await asyncio.wait_for(transfer, 5)
        await rig.wait(lambda: rig.phone.get_call(call_id).state is CallState.ACTIVE, what="the caller back")
        rig.phone.hangup(call_id)
        [entry] = await written(rig, 1)
        assert (entry["result"], entry["transferred_to"]) == ("answered", None)


async def test_an_attended_transfer_records_its_target_and_the_consultation(phone_rig) -> None:
    clock = Clock()
    async with phone_rig(TRANSFER_PLUGINS, toml(extra=TRANSFER), before=with_clock(clock)) as rig:
        call_id = await answered_call(rig, clock)
        transfer = asyncio.ensure_future(rig.phone.run_action("attended_transfer:desk"))
        await rig.wait(lambda: rig.engine.sent("make_call"), what="the consultation call")
        consult = next(c.id for c in rig.phone.calls() if c.id != call_id)
        rig.engine.remote_answer(consult)
        await rig.wait(lambda: rig.engine.sent("transfer_replaces"), what="the REFER with Replaces")
        rig.engine.transfer_progress(call_id, 200, "OK", final=True)
        await asyncio.wait_for(transfer, 5)
        entries = await written(rig, 2)
        by_direction = {e["direction"]: e for e in entries}
        assert by_direction["incoming"]["transferred_to"] == desk(rig)
        assert (by_direction["outgoing"]["remote_uri"], by_direction["outgoing"]["result"]) == (desk(rig), "answered")
        assert by_direction["outgoing"]["transferred_to"] is None


async def test_a_transfer_reported_by_another_plugin(phone_rig) -> None:
    clock = Clock()
    async with phone_rig(PLUGINS, toml(), before=with_clock(clock)) as rig:
        call_id = await answered_call(rig, clock)
        uri = "sip:2000@127.0.0.1"
        rig.phone.report_transfer(TransferStatus(call_id, "x", uri, TransferState.STARTED))
        rig.phone.report_transfer(TransferStatus(call_id, "x", uri, TransferState.SUCCEEDED, 200, "OK"))
        rig.phone.hangup(call_id)
        [entry] = await written(rig, 1)
        assert entry["transferred_to"] == uri


# --- the bound, the file -------------------------------------------------------------------------------


async def test_the_history_keeps_at_most_size_calls(phone_rig, tmp_path: Path) -> None:
    clock = Clock()
    async with phone_rig(PLUGINS, toml(size=3), before=with_clock(clock)) as rig:
        for n in range(5):
            await missed_call(rig, f"sip:10{n}@127.0.0.1")
            clock.advance(60)
        entries = await written(rig, 5)
        assert [e["remote_uri"] for e in entries] == [f"sip:10{n}@127.0.0.1" for n in (4, 3, 2)]
        assert file_data(tmp_path / "history.json")["calls"] == entries


async def test_the_history_is_kept_across_a_restart(phone_rig, tmp_path: Path) -> None:
    clock = Clock()
    async with phone_rig(PLUGINS, toml(), before=with_clock(clock)) as rig:
        await missed_call(rig, "sip:101@127.0.0.1")
        before = await written(rig, 1)
    async with phone_rig(PLUGINS, toml(), before=with_clock(clock)) as rig:
        assert await rig.phone.run_action("history") == before
        assert rig.phone.status()["history"] == before
        clock.advance(60)
        await missed_call(rig, "sip:102@127.0.0.1")
        entries = await written(rig, 1)
    assert [e["remote_uri"] for e in entries] == ["sip:102@127.0.0.1", "sip:101@127.0.0.1"]
    assert file_data(tmp_path / "history.json")["calls"] == entries


async def test_a_smaller_size_after_a_restart_keeps_the_newest(phone_rig, tmp_path: Path) -> None:
    async with phone_rig(PLUGINS, toml(size=5), before=with_clock(Clock())) as rig:
        for n in range(4):
            await missed_call(rig, f"sip:10{n}@127.0.0.1")
        await written(rig, 4)
    async with phone_rig(PLUGINS, toml(size=2), before=with_clock(Clock())) as rig:
        entries = await rig.phone.run_action("history")
        assert [e["remote_uri"] for e in entries] == ["sip:103@127.0.0.1", "sip:102@127.0.0.1"]


@pytest.mark.parametrize(
    "content",
    [
        b'{"version": 1, "calls": [{"direction": "sideways"',  # cut short
        b"\x00\x01 not json",
        b'{"version": 1, "calls": [{"direction": "sideways", "remote_uri": "x", "start": "", "end": "", "result": "answered"}]}',
        b'{"version": 2, "calls": []}',  # a newer phone's file
        b"[]",
        b"",
    ],
)
async def test_a_bad_file_is_kept_aside_and_logged_once(phone_rig, tmp_path: Path, caplog, content: bytes) -> None:
    path = tmp_path / "history.json"
    path.write_bytes(content)
    caplog.set_level(logging.INFO, logger="softphone_history")
    async with phone_rig(PLUGINS, toml(), before=with_clock(Clock())) as rig:
        assert await rig.phone.run_action("history") == []
        await missed_call(rig)
        await missed_call(rig)
        entries = await written(rig, 2)
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1, [r.getMessage() for r in problems]
    assert str(path) in problems[0].getMessage() and problems[0].levelno == logging.ERROR
    assert f"kept as {path}.bad" in problems[0].getMessage()
    assert (tmp_path / "history.json.bad").read_bytes() == content
    assert file_data(path) == {"version": 1, "calls": entries}


async def test_the_file_is_private_and_written_whole(phone_rig, tmp_path: Path) -> None:
    old = os.umask(0)  # whatever the umask, the file is the user's only
    try:
        async with phone_rig(PLUGINS, toml(file="state/history.json"), before=with_clock(Clock())) as rig:
            await missed_call(rig)
            await written(rig, 1)
    finally:
        os.umask(old)
    path = tmp_path / "state" / "history.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["history.json"]  # no temporary file left


async def test_a_file_that_cannot_be_written_leaves_the_history_in_memory(phone_rig, tmp_path: Path, caplog) -> None:
    (tmp_path / "blocked").write_text("a file where the folder should be")
    caplog.set_level(logging.INFO, logger="softphone_history")
    async with phone_rig(PLUGINS, toml(file="blocked/history.json"), before=with_clock(Clock())) as rig:
        await missed_call(rig)
        await missed_call(rig)
        assert len(await written(rig, 2)) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "blocked/history.json cannot be written" in errors[0]


async def test_without_a_file_the_history_is_in_memory_only(phone_rig, tmp_path: Path) -> None:
    async with phone_rig(PLUGINS, toml(file=""), before=with_clock(Clock())) as rig:
        await missed_call(rig)
        assert len(await written(rig, 1)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


# --- status, actions, configuration --------------------------------------------------------------------


async def test_status_shows_ten_and_the_actions_show_and_clear_all(phone_rig, tmp_path: Path) -> None:
    clock = Clock()
    async with phone_rig(PLUGINS, toml(), before=with_clock(clock)) as rig:
        assert {"history", "history_clear"} <= set(rig.phone.actions())
        for n in range(12):
            await missed_call(rig, f"sip:1{n:02}@127.0.0.1")
            clock.advance(1)
        entries = await written(rig, 12)
        newest_first = [f"sip:1{n:02}@127.0.0.1" for n in reversed(range(12))]
        assert [e["remote_uri"] for e in entries] == newest_first
        assert rig.phone.status()["history"] == entries[:10]
        assert await rig.phone.run_action("history:2") == entries[:2]
        with pytest.raises(Exception, match="number of calls"):
            await rig.phone.run_action("history:x")

        assert await rig.phone.run_action("history_clear") == {"cleared": 12}
        assert await rig.phone.run_action("history") == []
        assert rig.phone.status()["history"] == []
        assert file_data(tmp_path / "history.json") == {"version": 1, "calls": []}
        await rig.wait(lambda: any(e["event"] == "call_history_cleared" for e in rig.events), what="the clear event")


@pytest.mark.parametrize(
    "body, message",
    [
        ("[history]\nsize = 0\n", "history.size"),
        ("[history]\nsize = 1001\n", "history.size"),
        ('[history]\nsize = "ten"\n', "history.size"),
        ('[history]\nfile = 3\n', "history.file"),
        ("[history]\nkeep = 5\n", "keep"),
    ],
)
def test_configuration_mistakes_are_reported(tmp_path: Path, body: str, message: str) -> None:
    path = write_config(tmp_path, ["softphone_history"], body)
    with pytest.raises(ConfigError, match=message):
        app.prepare(str(path), secrets=False, strict=True)


def test_the_default_file_is_in_the_state_directory(tmp_path: Path, monkeypatch) -> None:
    path = write_config(tmp_path, ["softphone_history"], "")
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    _, host = app.prepare(str(path), secrets=False, strict=True)
    assert host.pm.get_plugin("softphone_history").path == Path("/var/lib/firmware-app/history.json")
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    _, host = app.prepare(str(path), secrets=False, strict=True)
    assert host.pm.get_plugin("softphone_history").path == tmp_path / "history.json"


async def test_a_call_refused_by_do_not_disturb_is_in_the_history(phone_rig, tmp_path):
    async with phone_rig(["softphone_history"], f'[history]\nfile = "{tmp_path / "h.json"}"\n') as rig:
        await rig.phone.run_action("dnd:on")
        rig.engine.incoming("sip:1009@127.0.0.1")
        await rig.wait(lambda: [e for e in rig.events if e["event"] == "call_history"], what="the entry")
        [entry] = await rig.phone.run_action("history")
        assert (entry["result"], entry["code"], entry["reason"], entry["remote_uri"]) == (
            "refused", 486, "do not disturb", "sip:1009@127.0.0.1")
