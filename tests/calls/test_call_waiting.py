"""Call waiting on the fake SIP engine: a second call rings while one is up; answer, swap, hang up, conference."""

from __future__ import annotations

import pytest

from firmware_app.errors import CommandError
from firmware_app.model import ButtonEvent, CallState, Gesture, PhoneState
from firmware_app.testing import settle


async def in_call_with_a_waiting_call(rig) -> tuple[int, int]:
    await rig.set_state(PhoneState.IN_CALL)
    first = rig.phone.calls()[0].id
    second = rig.engine.incoming("sip:1002@127.0.0.1")
    await settle()
    assert rig.phone.state is PhoneState.WAITING
    assert rig.engine.sent("ring")[-1] == (second,)  # it rings (180) instead of a 486
    return first, second


def states(rig) -> dict[int, CallState]:
    return {c.id: c.state for c in rig.phone.calls()}


async def test_answering_the_waiting_call_holds_the_first(phone_rig):
    async with phone_rig([]) as rig:
        first, second = await in_call_with_a_waiting_call(rig)
        await rig.phone.run_action("answer")
        await settle()
        assert states(rig) == {first: CallState.HELD, second: CallState.ACTIVE}
        assert rig.phone.state is PhoneState.IN_CALL
        held_then_answered = [c[0] for c in rig.engine.commands if c[0] in ("hold", "answer")]
        assert held_then_answered == ["hold", "answer"]


async def test_swap_and_hold_toggle_change_calls(phone_rig):
    async with phone_rig([]) as rig:
        first, second = await in_call_with_a_waiting_call(rig)
        await rig.phone.run_action("answer")
        await settle()
        await rig.phone.run_action("swap")
        await settle()
        assert states(rig) == {first: CallState.ACTIVE, second: CallState.HELD}
        await rig.phone.run_action("hold_toggle")  # with one up and one held, hold_toggle swaps too
        await settle()
        assert states(rig) == {first: CallState.HELD, second: CallState.ACTIVE}


async def test_hanging_up_goes_back_to_the_held_call(phone_rig):
    async with phone_rig([]) as rig:
        first, second = await in_call_with_a_waiting_call(rig)
        await rig.phone.run_action("answer")
        await settle()
        await rig.phone.run_action("hangup")  # ends the call in progress (the second) ...
        await settle()
        assert states(rig) == {first: CallState.ACTIVE}  # ... and the first is back
        assert rig.engine.sent("unhold") == [(first,)]


async def test_hanging_up_while_a_call_waits_leaves_it_ringing(phone_rig):
    async with phone_rig([]) as rig:
        first, second = await in_call_with_a_waiting_call(rig)
        await rig.phone.run_action("hangup")
        await settle()
        assert states(rig) == {second: CallState.RINGING}
        assert rig.phone.state is PhoneState.RINGING


async def test_rejecting_the_waiting_call_leaves_the_first_alone(phone_rig):
    async with phone_rig([]) as rig:
        first, second = await in_call_with_a_waiting_call(rig)
        await rig.phone.run_action("reject")
        await settle()
        assert rig.engine.sent("reject") == [(second, 486)]
        assert states(rig) == {first: CallState.ACTIVE}


async def test_a_press_answers_the_waiting_call_and_a_long_press_rejects_it(phone_rig):
    async with phone_rig([]) as rig:
        first, second = await in_call_with_a_waiting_call(rig)
        rig.phone.input(ButtonEvent("gpio", "main", Gesture.SINGLE))
        await rig.wait(lambda: states(rig) == {first: CallState.HELD, second: CallState.ACTIVE}, what="answered")
        third = rig.engine.incoming("sip:1003@127.0.0.1")  # two calls already: busy
        await settle()
        assert rig.engine.sent("reject")[-1] == (third, 486)


async def test_a_conference_joins_the_two_calls(phone_rig):
    async with phone_rig([]) as rig:
        first, second = await in_call_with_a_waiting_call(rig)
        await rig.phone.run_action("answer")
        await settle()
        assert sorted(await rig.phone.run_action("conference")) == sorted([first, second])
        await settle()
        assert states(rig) == {first: CallState.ACTIVE, second: CallState.ACTIVE}
        assert rig.engine.sent("join") in ([(first, second)], [(second, first)])
        rig.phone.hangup(second)
        await settle()
        with pytest.raises(CommandError, match="needs two calls"):
            await rig.phone.run_action("conference")


async def test_with_call_waiting_off_a_second_call_is_refused_busy(phone_rig):
    async with phone_rig([], "[calls]\ncall_waiting = false\n") as rig:
        await rig.set_state(PhoneState.IN_CALL)
        second = rig.engine.incoming("sip:1002@127.0.0.1")
        await settle()
        assert rig.engine.sent("reject") == [(second, 486)]
        assert rig.phone.state is PhoneState.IN_CALL


async def test_dtmf_is_sent_in_the_call_and_received_digits_reach_plugins(phone_rig):
    async with phone_rig([]) as rig:
        await rig.set_state(PhoneState.IN_CALL)
        call_id = rig.phone.calls()[0].id
        assert await rig.phone.run_action("dtmf:12*#") == "rfc4733"
        assert rig.engine.sent("send_dtmf") == [(call_id, "12*#")]
        for bad in ("dtmf:12x", "dtmf:"):
            with pytest.raises(CommandError):
                await rig.phone.run_action(bad)
        rig.engine.remote_dtmf(call_id, "5")
        rig.engine.remote_dtmf(call_id, "\x00")  # garbage from the wire: ignored
        await settle()
        received = [e for e in rig.events if e["event"] == "dtmf" and e["direction"] == "received"]
        assert [(e["call_id"], e["digit"]) for e in received] == [(call_id, "5")]


async def test_dtmf_needs_a_call_in_progress(phone_rig):
    async with phone_rig([]) as rig:
        with pytest.raises(CommandError, match="no call"):
            await rig.phone.run_action("dtmf:1")
