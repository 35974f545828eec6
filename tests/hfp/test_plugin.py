"""The headset plugin in a real phone (on the fake SIP engine) against the real bluealsa on a private bus.

The headset is played on the far side of bluealsa (tests/hfp/bluealsa_rig.py): what it sends goes through
bluealsa's own AT parser and forwarding, and what the phone writes reaches it through bluealsa. Calls come
from :class:`firmware_app.testing.FakeEngine`; the SIP side end to end is in tests/test_hfp_sip.py.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from firmware_app.model import CallState, PhoneState
from tests.hfp.bluealsa_rig import Bluealsa, Headset
from tests.inputs.conftest import Rig

PLUGINS = ["softphone_hfp"]
HFP = "[hfp]\nretry_first_s = 0.1\nretry_max_s = 0.5\n"
CALLER = "sip:1001@127.0.0.1"


@pytest.fixture
def hfp_phone(phone_rig, bluealsa: Bluealsa, monkeypatch: pytest.MonkeyPatch):
    """``async with hfp_phone(extra_toml) as rig``: a phone whose system bus is the rig's private one."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bluealsa.bus_address)

    def start(extra: str = "", plugins: list[str] = PLUGINS):
        return phone_rig(plugins, HFP + extra)

    return start


def hfp_status(rig: Rig) -> dict[str, Any]:
    return rig.phone.status().get("hfp", {})


def headset_of(rig: Rig, address: str) -> dict[str, Any] | None:
    return next((h for h in hfp_status(rig).get("headsets", []) if h["address"] == address), None)


async def connected(rig: Rig, bluealsa: Bluealsa, transport: str = "HFP", address: str = "00:11:22:33:44:55") -> Headset:
    """A headset connects; the phone takes its channel; then (HFP) the SLC, which ends with service 1."""
    headset = await bluealsa.connect_async(address, transport)
    await rig.wait(lambda: headset_of(rig, address), what=f"the phone to hold {address}'s channel")
    await headset.wait_forwarded_async()
    if transport == "HFP":
        await headset.slc_async()
        await headset.expect_async("+CIEV: 1,1")
    await rig.wait(lambda: headset_of(rig, address)["ready"], what="the headset to be ready")
    return headset


async def seen(headset: Headset, line: str) -> None:
    """``line`` came, among what is not consumed yet or next."""
    if line not in headset.take():
        await headset.expect_async(line)


async def ringing(rig: Rig, headset: Headset) -> int:
    """A caller rings the phone: the headset sees callsetup 1 and RING."""
    rig.engine.incoming(CALLER)
    await rig.wait(lambda: rig.phone.state is PhoneState.RINGING, what="ringing")
    lines = await headset.expect_async("RING")
    if headset.transport == "HFP":
        assert "+CIEV: 3,1" in lines
    return rig.phone.calls()[0].id


def routes(rig: Rig) -> list[str | None]:
    return [c[0] for c in rig.engine.sent("route_audio")]


async def test_an_incoming_call_rings_the_headset_and_its_answer_button_answers(hfp_phone, bluealsa):
    async with hfp_phone() as rig:
        headset = await connected(rig, bluealsa)
        headset.send("AT+CLIP=1")
        await headset.expect_async("OK")
        await ringing(rig, headset)
        assert "+CLIP: \"1001\",129" in await headset.expect_async("RING")  # RING repeats, with the caller
        headset.send("ATA")
        lines = await headset.expect_async("+CIEV: 3,0")
        assert lines[lines.index("OK"):] == ["OK", "+CIEV: 2,1", "+CIEV: 3,0"]  # OK first, then the indicators
        assert rig.engine.sent("answer")
        await rig.wait(lambda: rig.phone.state is PhoneState.IN_CALL, what="in call")
        await rig.wait(lambda: rig.phone.sound_devices == ("bluetooth_headset", "bluetooth_headset"), what="the route")
        assert rig.inputs()[-1] == ("hfp", "answer", "single")


async def test_the_headsets_hangup_ends_the_call_and_the_audio_goes_back(hfp_phone, bluealsa):
    async with hfp_phone() as rig:
        headset = await connected(rig, bluealsa)
        call_id = await ringing(rig, headset)
        headset.send("ATA")
        await headset.expect_async("+CIEV: 3,0")
        await rig.wait(lambda: routes(rig) == ["bluetooth_headset"], what="the audio on the headset")
        rig.engine.commands.clear()
        headset.send("AT+CHUP")
        assert await headset.expect_async("+CIEV: 2,0") == ["OK", "+CIEV: 2,0"]
        assert rig.engine.sent("hangup") == [(call_id,)]
        await rig.wait(lambda: routes(rig) == [None], what="the audio back on the configured devices")


async def test_the_headset_rejects_a_ringing_call(hfp_phone, bluealsa):
    async with hfp_phone() as rig:
        headset = await connected(rig, bluealsa)
        call_id = await ringing(rig, headset)
        headset.send("AT+CHUP")
        lines = await headset.expect_async("+CIEV: 3,0")
        assert "OK" in lines and "+CIEV: 2,1" not in lines
        assert rig.engine.sent("reject")[0][0] == call_id
        assert routes(rig) == []  # the headset's audio was never opened


async def test_the_far_end_hanging_up_and_an_answer_elsewhere_update_the_indicators(hfp_phone, bluealsa):
    async with hfp_phone() as rig:
        headset = await connected(rig, bluealsa)
        call_id = await ringing(rig, headset)
        rig.phone.answer(call_id)  # a GPIO button or the CLI
        assert (await headset.expect_async("+CIEV: 3,0"))[-2:] == ["+CIEV: 2,1", "+CIEV: 3,0"]
        rig.engine.remote_hangup(call_id)
        await headset.expect_async("+CIEV: 2,0")
        await rig.wait(lambda: routes(rig) == ["bluetooth_headset", None], what="the route back")
        # A ringing call the caller gives up: callsetup back to 0, RING stops.
        await ringing(rig, headset)
        rig.engine.remote_hangup(rig.phone.calls()[0].id, 487, "Request Terminated")
        await headset.expect_async("+CIEV: 3,0")


async def test_an_hsp_headset_answers_and_hangs_up_with_its_one_button(hfp_phone, bluealsa):
    async with hfp_phone() as rig:
        headset = await connected(rig, bluealsa, "HSP")
        await ringing(rig, headset)
        headset.send("AT+CKPD=200")
        await headset.expect_async("OK")
        await rig.wait(lambda: rig.phone.state is PhoneState.IN_CALL, what="answered")
        headset.send("AT+CKPD=200")
        await headset.expect_async("OK")
        await rig.wait(lambda: rig.phone.state is PhoneState.IDLE, what="hung up")
        assert [i for i in rig.inputs() if i[0] == "hfp"] == [("hfp", "hsp_button", "single")] * 2
        assert "+CIEV" not in " ".join(headset.take())  # HSP has no indicators


async def test_a_command_nothing_is_mapped_to_gets_error_and_a_mapped_one_runs(hfp_phone, bluealsa):
    mapping = '\n[buttons.controls.voice_dial.in_call]\nsingle = "hold"\n'
    async with hfp_phone(mapping, plugins=[*PLUGINS]) as rig:
        headset = await connected(rig, bluealsa)
        headset.send("AT+BVRA=1")  # idle: nothing mapped
        await headset.expect_async("ERROR")
        await rig.set_state(PhoneState.IN_CALL)
        await headset.expect_async("+CIEV: 2,1")
        headset.send("AT+BVRA=1")
        await headset.expect_async("OK")
        await rig.wait(lambda: rig.phone.state is PhoneState.ON_HOLD, what="the mapped hold")


async def test_bad_lines_get_error_and_are_logged_once(hfp_phone, bluealsa, caplog):
    caplog.set_level(logging.WARNING, logger="firmware_app.hfp")
    async with hfp_phone() as rig:
        headset = await connected(rig, bluealsa)
        for _ in range(3):
            headset.send("AT+XYZZY=1")
            await headset.expect_async("ERROR")
        # bluealsa drops an over-long line itself, in pieces (the dialogue's own limit: test_dialogue.py), and
        # may take what follows with it; the channel then works again.
        headset.send("AT" + "9" * 600)
        await headset.wait_forwarded_async()
        headset.send("AT+CLIP=1")
        await headset.expect_async("OK")
        logged = [r.getMessage() for r in caplog.records if "XYZZY" in r.getMessage()]
        assert len(logged) == 1, logged


async def test_a_headset_that_goes_away_mid_call_leaves_the_call_on_the_wired_device(hfp_phone, bluealsa):
    async with hfp_phone() as rig:
        headset = await connected(rig, bluealsa)
        await ringing(rig, headset)
        headset.send("ATA")
        await headset.expect_async("+CIEV: 3,0")
        await rig.wait(lambda: routes(rig) == ["bluetooth_headset"], what="the audio on the headset")
        headset.close()
        await rig.wait(lambda: routes(rig) == ["bluetooth_headset", None], what="the audio back on the wired device")
        assert rig.phone.state is PhoneState.IN_CALL and not rig.engine.sent("hangup")
        await rig.wait(lambda: hfp_status(rig)["headsets"] == [], what="the headset gone from the status")


async def test_a_headset_that_connects_during_a_call_takes_it_over(hfp_phone, bluealsa):
    async with hfp_phone() as rig:
        await rig.set_state(PhoneState.IN_CALL)
        headset = await connected(rig, bluealsa)
        await seen(headset, "+CIEV: 2,1")
        await rig.wait(lambda: routes(rig) == ["bluetooth_headset"], what="the audio on the headset")


async def test_take_over_calls_off_leaves_the_call_where_it_is(hfp_phone, bluealsa):
    async with hfp_phone("take_over_calls = false\n") as rig:
        await rig.set_state(PhoneState.IN_CALL)
        headset = await connected(rig, bluealsa)
        await rig.set_state(PhoneState.ON_HOLD)  # the call changes: still not the headset's
        await rig.set_state(PhoneState.IN_CALL)
        rig.phone.hangup()
        await rig.wait(lambda: rig.phone.state is PhoneState.IDLE, what="idle")
        assert routes(rig) == []
        assert "+CIEV: 2,1" not in headset.take()
        await ringing(rig, headset)  # the next call is the headset's


async def test_volume_follows_the_headset_and_the_phone(hfp_phone, bluealsa):
    async with hfp_phone() as rig:
        headset = await connected(rig, bluealsa)
        headset.send("AT+VGS=9")  # the headset's own volume keys: bluealsa answers, the phone hears a copy
        await headset.expect_async("OK")
        event = await rig.wait(lambda: [e for e in rig.events if e["event"] == "volume" and e.get("source") == "hfp"])
        assert event[-1]["level"] == 60
        rig.phone.emit("volume", level=40, muted=False, at_limit=False)  # the audio plugin's volume keys
        await headset.expect_async("+VGS: 6")
        rig.phone.emit("mic_mute", muted=True)
        await headset.expect_async("+VGM: 0")


async def test_a_channel_another_program_holds_is_taken_once_it_is_free(hfp_phone, bluealsa, caplog):
    caplog.set_level(logging.WARNING, logger="firmware_app.hfp")
    headset = bluealsa.connect("00:11:22:33:44:66")
    holder = bluealsa.open_rfcomm(headset)  # another program took the channel first
    async with hfp_phone() as rig:
        await rig.wait(lambda: "another program holds" in caplog.text, what="the busy channel said")
        holder.close()
        await rig.wait(lambda: headset_of(rig, "00:11:22:33:44:66"), what="the phone to take the channel")
        assert caplog.text.count("another program holds") == 1


async def test_a_phone_that_starts_after_the_slc_still_shows_service(hfp_phone, bluealsa):
    headset = bluealsa.connect()
    headset.slc()
    async with hfp_phone("slc_wait_s = 0.5\n") as rig:
        await headset.expect_async("+CIEV: 1,1")
        await ringing(rig, headset)


async def test_bluealsa_restarting_mid_call_leaves_the_call_and_the_headset_comes_back(hfp_phone, bluealsa, caplog):
    caplog.set_level(logging.INFO, logger="firmware_app.hfp")
    async with hfp_phone() as rig:
        headset = await connected(rig, bluealsa)
        await ringing(rig, headset)
        headset.send("ATA")
        await headset.expect_async("+CIEV: 3,0")
        await bluealsa.restart_async()
        await rig.wait(lambda: "bluealsa stopped" in caplog.text, what="the phone to say bluealsa stopped")
        await rig.wait(lambda: routes(rig)[-1:] == [None], what="the audio back on the wired device")
        assert rig.phone.calls()[0].state is CallState.ACTIVE
        again = await connected(rig, bluealsa)  # the headset reconnects to the new bluealsa
        await seen(again, "+CIEV: 2,1")
        assert caplog.text.count("bluealsa stopped") == 1


async def test_a_number_dialled_on_the_headset_is_called(hfp_phone, bluealsa):
    async with hfp_phone() as rig:
        headset = await connected(rig, bluealsa)
        headset.send("ATD1003;")
        await headset.expect_async("OK")
        await headset.expect_async("+CIEV: 3,2")  # outgoing call set-up
        assert rig.engine.sent("make_call")[0][0].startswith("sip:1003@")
        headset.send("ATD1004;")  # one call at a time
        await headset.expect_async("ERROR")


async def test_without_a_system_bus_the_phone_says_so_once_and_keeps_taking_calls(phone_rig, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="firmware_app.hfp")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    async with phone_rig(PLUGINS, "[hfp]\nretry_first_s = 0.05\nretry_max_s = 0.05\n") as rig:
        await rig.set_state(PhoneState.RINGING)
        await rig.set_state(PhoneState.IN_CALL)
        retries = lambda: [r for r in caplog.records if r.getMessage().startswith("hfp: the system D-Bus is still")]
        await rig.wait(lambda: len(retries()) >= 3, what="three retries")
        assert caplog.text.count("system D-Bus is not reachable") == 1
        assert hfp_status(rig) == {"bluealsa": False, "audio_on_headset": False, "headsets": []}
