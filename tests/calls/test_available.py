"""The "available" pool: agents' lines watched through the registrar, busy ones skipped without an INVITE."""

from __future__ import annotations

import asyncio

import pytest

from firmware_app.errors import CommandError
from firmware_app.model import PhoneState
from firmware_app.testing import settle

POOL = """
[transfer.targets.anna]
uri = "1003"
[transfer.targets.ben]
uri = "1004"
[transfer.pools.agents]
targets = ["anna", "ben", "sip:1005@127.0.0.1:5060"]
strategy = "available"
"""
A, B, C = (f"sip:{n}@127.0.0.1:5060" for n in ("1003", "1004", "1005"))


async def transfer(rig) -> list[str]:
    """Run transfer:agents, let each REFER fail but the last, and return the URIs referred to, in order."""
    task = asyncio.create_task(rig.phone.run_action("transfer:agents"))
    referred: list[str] = []
    for _ in range(200):
        await settle()
        sent = rig.engine.sent("transfer")
        if len(sent) > len(referred):
            referred.append(sent[-1][1])
            call_id = sent[-1][0]
            rig.engine.transfer_progress(call_id, 200, "OK", final=True)
        if task.done():
            break
    await task
    return referred


async def test_the_pool_watches_its_agents_and_picks_the_idle_one(phone_rig):
    async with phone_rig(["softphone_transfer"], POOL) as rig:
        assert rig.engine.sent("watch_lines") == [([A, B, C],)]
        rig.engine.line(A, "busy")
        rig.engine.line(B, "ringing")
        rig.engine.line(C, "idle")
        await settle()
        assert rig.phone.line_states() == {A: "busy", B: "ringing", C: "idle"}
        assert rig.phone.status()["lines"] == {A: "busy", B: "ringing", C: "idle"}
        await rig.set_state(PhoneState.IN_CALL)
        assert await transfer(rig) == [C]  # the idle one; the busy one is never referred to
        assert [e["state"] for e in rig.events if e["event"] == "line" and e["uri"] == A] == ["busy"]


async def test_without_known_states_it_is_the_ordered_strategy(phone_rig):
    async with phone_rig(["softphone_transfer"], POOL) as rig:
        await rig.set_state(PhoneState.IN_CALL)
        assert await transfer(rig) == [A]


async def test_every_agent_busy_fails_at_once_and_the_caller_stays(phone_rig):
    async with phone_rig(["softphone_transfer"], POOL) as rig:
        for uri in (A, B, C):
            rig.engine.line(uri, "busy")
        await rig.set_state(PhoneState.IN_CALL)
        with pytest.raises(CommandError, match="every agent of agents is busy"):
            await rig.phone.run_action("transfer:agents")
        assert rig.engine.sent("transfer") == [] and rig.engine.sent("hold") == []
        assert rig.phone.state is PhoneState.IN_CALL


async def test_an_ended_subscription_is_unknown_and_watched_again_with_a_backoff(phone_rig, monkeypatch, caplog):
    from firmware_app import phone as phone_module

    monkeypatch.setattr(phone_module, "LINE_RETRY_S", 0.05)
    async with phone_rig(["softphone_transfer"], POOL) as rig:
        rig.engine.line(A, "idle")
        await settle()
        for tries in range(1, 4):  # the registrar refuses it again and again (a number it does not serve)
            rig.engine.line(A, "unknown", ended=True, reason="404 Not Found")
            await rig.wait(lambda: len(rig.engine.sent("rewatch_line")) == tries, what=f"retry {tries}")
        assert rig.phone.line_states()[A] == "unknown"
        assert caplog.text.count("the registrar ended the subscription (404 Not Found)") == 1
        assert rig.phone._line_retry[A] == pytest.approx(0.4)  # 0.05 doubled three times
        rig.engine.line(A, "idle")  # back: the backoff starts afresh
        await settle()
        assert A not in rig.phone._line_retry
