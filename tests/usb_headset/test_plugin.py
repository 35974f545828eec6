"""The USB headset plugin in a real phone (on the fake SIP engine), its hidraw node a socketpair.

The headset's end of the socketpair is played by the test with real report bytes both ways: it sends input
reports as the headset would (hook, mute, flash) and reads the whole output reports the phone writes, byte
by byte. The descriptors are the fixtures of tests/usb_headset/descriptors.py. SIP end to end is in
tests/usb_headset/test_usb_sip.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

from firmware_app.model import ButtonEvent, Gesture, PhoneState
from softphone_usb_headset.devices import HidrawNode
from tests.inputs.conftest import Rig
from tests.usb_headset import descriptors as d

PLUGINS = ["softphone_usb_headset"]
CONFIG = "[usb_headset]\nrescan_s = 0.1\n"


class FakeHidraw:
    """Hidraw nodes for the phone: each ``plug`` is a headset whose node is one end of a SOCK_SEQPACKET
    socketpair (one message per report, both ways, as a hidraw node reads and writes)."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[HidrawNode, socket.socket | None]] = {}
        self.opened: list[str] = []
        self.scans = 0

    def plug(self, descriptor: bytes, name: str = "GN Netcom Jabra Link 380", usb_id: str = "0b0e:245e",
             path: str = "/dev/hidraw1") -> None:
        vendor, product = (int(x, 16) for x in usb_id.split(":"))
        self.nodes[path] = (HidrawNode(path, name, vendor, product, descriptor), None)

    def unplug(self, path: str = "/dev/hidraw1") -> None:
        _, headset_end = self.nodes.pop(path)
        if headset_end is not None:
            headset_end.close()

    def scan(self) -> list[HidrawNode]:
        self.scans += 1
        return [node for node, _ in self.nodes.values()]

    def open(self, node: HidrawNode) -> int:
        phone_end, headset_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        phone_end.setblocking(False)
        headset_end.settimeout(5)
        self.nodes[node.path] = (node, headset_end)
        self.opened.append(node.path)
        return phone_end.detach()

    def headset(self, path: str = "/dev/hidraw1") -> socket.socket:
        end = self.nodes[path][1]
        assert end is not None, f"the phone has not opened {path}"
        return end


def written(end: socket.socket) -> list[bytes]:
    """Every output report the phone has written so far (without waiting for more)."""
    reports = []
    end.setblocking(False)
    try:
        while True:
            reports.append(end.recv(64))
    except BlockingIOError:
        pass
    finally:
        end.settimeout(5)
    return reports


async def next_report(rig: Rig, end: socket.socket) -> bytes:
    got: list[bytes] = []
    await rig.wait(lambda: got.extend(written(end)) or got, what="an output report")
    return got[-1]


async def send_soon(end: socket.socket, report: bytes) -> None:
    """Send without blocking the loop the phone reads on (the socket's queue holds only a few reports)."""
    end.setblocking(False)
    try:
        for _ in range(1000):
            try:
                end.send(report)
                return
            except BlockingIOError:
                await asyncio.sleep(0.001)
    finally:
        end.settimeout(5)
    raise AssertionError("the phone stopped reading the headset")


@pytest.fixture
def usb_phone(phone_rig):
    """``async with usb_phone(hidraw, extra) as rig``: a phone whose USB headset plugin sees ``hidraw``."""

    def start(hidraw: FakeHidraw, extra: str = "", plugins: list[str] = PLUGINS, echo_ms: int = 0):
        """``echo_ms``: the hook echo window, off unless a test is about it (a test's hook comes at once)."""

        def hand_over(host: Any) -> None:
            host.pm.get_plugin("softphone_usb_headset")._devices = hidraw

        return phone_rig(plugins, f"{CONFIG}hook_echo_ms = {echo_ms}\n{extra}", before=hand_over)

    return start


async def opened(rig: Rig, hidraw: FakeHidraw, path: str = "/dev/hidraw1") -> socket.socket:
    await rig.wait(lambda: path in hidraw.opened, what=f"the phone to open {path}")
    end = hidraw.headset(path)
    assert await next_report(rig, end) == b"\x03\x00"  # idle: every indicator off, in the whole report
    return end


# --- Jabra-like: a latching hook switch, numbered reports, LEDs in report 3


async def test_lifting_the_boom_answers_and_the_leds_follow_the_call(usb_phone):
    hidraw = FakeHidraw()
    hidraw.plug(d.JABRA_LIKE)
    async with usb_phone(hidraw) as rig:
        end = await opened(rig, hidraw)
        await rig.set_state(PhoneState.RINGING)
        assert await next_report(rig, end) == b"\x03\x02"  # Ring
        end.send(b"\x02\x01\x00")  # the boom goes down: off hook
        await rig.wait(lambda: rig.phone.state is PhoneState.IN_CALL, what="answered")
        assert await next_report(rig, end) == b"\x03\x01"  # Off-Hook, Ring off
        assert rig.inputs() == [("usb_headset", "hook_switch", "down")]
        end.send(b"\x02\x01\x00")  # the same state again (another control's report): nothing
        await rig.set_state(PhoneState.ON_HOLD)
        assert await next_report(rig, end) == b"\x03\x09"  # Hold, and Off-Hook stays on
        await rig.set_state(PhoneState.IN_CALL)
        assert await next_report(rig, end) == b"\x03\x01"
        end.send(b"\x02\x00\x00")  # the boom goes up: on hook
        await rig.wait(lambda: rig.phone.state is PhoneState.IDLE, what="hung up")
        assert await next_report(rig, end) == b"\x03\x00"
        assert rig.inputs() == [("usb_headset", "hook_switch", "down"), ("usb_headset", "hook_switch", "up")]
        assert rig.engine.sent("hangup")


async def test_mute_from_the_headset_and_from_a_button_lights_the_mute_led(usb_phone):
    hidraw = FakeHidraw()
    hidraw.plug(d.JABRA_LIKE)
    async with usb_phone(hidraw, plugins=[*PLUGINS, "softphone_calls"]) as rig:
        end = await opened(rig, hidraw)
        await rig.set_state(PhoneState.IN_CALL)
        assert await next_report(rig, end) == b"\x03\x01"
        end.send(b"\x02\x05\x00")  # Phone Mute pressed (a relative toggle), boom still down
        await rig.wait(lambda: rig.phone.calls()[0].mic_muted, what="the call muted")
        assert await next_report(rig, end) == b"\x03\x05"  # Off-Hook + Mute
        rig.phone.input(ButtonEvent("gpio", "mute", Gesture.SINGLE))  # a GPIO mute button unmutes
        await rig.wait(lambda: not rig.phone.calls()[0].mic_muted, what="the call unmuted")
        assert await next_report(rig, end) == b"\x03\x01"


async def test_the_kernels_micmute_for_the_same_press_does_not_toggle_twice(usb_phone):
    hidraw = FakeHidraw()
    hidraw.plug(d.JABRA_LIKE)
    async with usb_phone(hidraw) as rig:
        end = await opened(rig, hidraw)
        await rig.set_state(PhoneState.IN_CALL)
        end.send(b"\x02\x05\x00")  # hidraw's Phone Mute ...
        await rig.wait(lambda: rig.phone.calls()[0].mic_muted, what="muted")
        rig.phone.input(ButtonEvent("headset", "mute", Gesture.SINGLE))  # ... and evdev's KEY_MICMUTE of it
        rig.phone.input(ButtonEvent("gpio", "voice_dial", Gesture.SINGLE))  # mapped to nothing: the witness
        await rig.witness(("gpio", "voice_dial", "single"))
        assert rig.phone.calls()[0].mic_muted
        assert len(rig.engine.sent("set_mic_muted")) == 1


async def test_the_hook_echo_of_the_phones_own_off_hook_is_ignored(usb_phone):
    hidraw = FakeHidraw()
    hidraw.plug(d.JABRA_LIKE)
    async with usb_phone(hidraw, echo_ms=5000) as rig:
        end = await opened(rig, hidraw)
        await rig.set_state(PhoneState.RINGING)
        assert await next_report(rig, end) == b"\x03\x02"
        rig.phone.answer()  # answered elsewhere (a GPIO button): the phone sets Off-Hook ...
        assert await next_report(rig, end) == b"\x03\x01"
        end.send(b"\x02\x00\x00")  # ... and the headset reports a stale on-hook, then its echo of it
        end.send(b"\x02\x01\x00")
        end.send(b"\x02\x09\x00")  # Flash pressed and released (hold): the witness that the echo was read
        end.send(b"\x02\x01\x00")
        await rig.wait(lambda: rig.phone.state is PhoneState.ON_HOLD, what="the flash")
        assert [i[1] for i in rig.inputs()] == ["flash"]


async def test_flash_can_be_mapped_to_a_blind_transfer(usb_phone):
    hidraw = FakeHidraw()
    hidraw.plug(d.JABRA_LIKE)
    mapping = '\n[buttons.controls.flash.in_call]\nsingle = "call:1003"\n'
    async with usb_phone(hidraw, mapping) as rig:
        end = await opened(rig, hidraw)
        await rig.set_state(PhoneState.IN_CALL)
        end.send(b"\x02\x09\x00")  # Flash pressed (absolute: 1 while pressed) ...
        end.send(b"\x02\x01\x00")  # ... and released
        await rig.wait(lambda: rig.engine.sent("make_call"), what="the mapped action")


# --- Logitech-like: a momentary (relative) call button and the Telephony Ringer


async def test_a_momentary_call_button_answers_and_hangs_up(usb_phone):
    hidraw = FakeHidraw()
    hidraw.plug(d.LOGITECH_LIKE, "Logitech H650e", "046d:0a29")
    async with usb_phone(hidraw) as rig:
        await rig.wait(lambda: "/dev/hidraw1" in hidraw.opened, what="opened")
        end = hidraw.headset()
        assert await next_report(rig, end) == b"\x08\x00\x00"
        await rig.set_state(PhoneState.RINGING)
        assert await next_report(rig, end) == b"\x08\x04\x00"  # the Ringer
        end.send(b"\x08\x01")  # pressed: a toggle
        end.send(b"\x08\x00")  # the next report: nothing
        await rig.wait(lambda: rig.phone.state is PhoneState.IN_CALL, what="answered")
        assert await next_report(rig, end) == b"\x08\x01\x00"
        end.send(b"\x08\x01")
        await rig.wait(lambda: rig.phone.state is PhoneState.IDLE, what="hung up")


# --- unnumbered reports


async def test_an_unnumbered_headset_gets_whole_reports_led_by_report_id_zero(usb_phone):
    hidraw = FakeHidraw()
    hidraw.plug(d.SIMPLE_UNNUMBERED, "Simple USB Headset", "1234:5678")
    async with usb_phone(hidraw) as rig:
        await rig.wait(lambda: "/dev/hidraw1" in hidraw.opened, what="opened")
        end = hidraw.headset()
        idle = await next_report(rig, end)
        assert idle[0] == 0 and not any(idle[1:])
        await rig.set_state(PhoneState.RINGING)
        ringing = await next_report(rig, end)
        assert ringing[0] == 0 and any(ringing[1:])


# --- devices coming, going and misbehaving


async def test_a_headset_plugged_in_later_and_unplugged_mid_call(usb_phone, caplog):
    caplog.set_level(logging.INFO, logger="firmware_app.usb_headset")
    hidraw = FakeHidraw()
    async with usb_phone(hidraw) as rig:
        await rig.wait(lambda: "no USB headset" in caplog.text, what="the missing headset said")
        await rig.set_state(PhoneState.IN_CALL)
        scans = hidraw.scans
        await rig.wait(lambda: hidraw.scans >= scans + 3, what="three more rescans with nothing plugged in")
        hidraw.plug(d.JABRA_LIKE)
        end = await rig.wait(lambda: hidraw.opened and hidraw.headset(), what="the headset opened")
        assert await next_report(rig, end) == b"\x03\x01"  # the call in progress, at once
        assert caplog.text.count("no USB headset") == 1  # said once, not at every rescan
        hidraw.unplug()
        await rig.wait(lambda: ("usb_headset", "disconnected") in [(e["source"], e["state"]) for e in rig.events if e["event"] == "input_device"])
        assert rig.phone.state is PhoneState.IN_CALL
        hidraw.plug(d.JABRA_LIKE)  # back (a dongle that re-enumerated)
        await rig.wait(lambda: len(hidraw.opened) == 2, what="the headset opened again")
        assert await next_report(rig, hidraw.headset()) == b"\x03\x01"


async def test_bad_reports_are_logged_once_and_the_headset_still_works(usb_phone, caplog):
    caplog.set_level(logging.WARNING, logger="firmware_app.usb_headset")
    hidraw = FakeHidraw()
    hidraw.plug(d.JABRA_LIKE)
    async with usb_phone(hidraw) as rig:
        end = await opened(rig, hidraw)
        await rig.set_state(PhoneState.RINGING)
        for _ in range(3):
            end.send(b"\x09\x00")  # an unknown report ID
            end.send(b"\x02\x01")  # a short report
        end.send(b"\x02\x01\x00" + bytes(61))  # padded to 64 bytes: read, the rest ignored
        await rig.wait(lambda: rig.phone.state is PhoneState.IN_CALL, what="answered by the padded report")
        assert caplog.text.count("no input report 9") == 1
        assert caplog.text.count("has 1 byte") == 1
        assert caplog.text.count("longer than its descriptor") == 1


async def test_a_vendor_page_headset_is_said_once_and_not_opened(usb_phone, caplog):
    caplog.set_level(logging.INFO, logger="firmware_app.usb_headset")
    hidraw = FakeHidraw()
    hidraw.plug(d.POLY_VENDOR, "Plantronics Savi 7xx", "047f:c03b")
    async with usb_phone(hidraw) as rig:
        await rig.wait(lambda: "0xFFA0" in caplog.text, what="the vendor-page headset said")
        await rig.wait(lambda: caplog.text.count("no USB headset") == 1)
        assert hidraw.opened == []
        assert caplog.text.count("0xFFA0") == 1


async def test_match_picks_the_configured_headset(usb_phone):
    hidraw = FakeHidraw()
    hidraw.plug(d.LOGITECH_LIKE, "Logitech H650e", "046d:0a29", path="/dev/hidraw0")
    hidraw.plug(d.JABRA_LIKE, "GN Netcom Jabra Link 380", "0b0e:245e", path="/dev/hidraw3")
    async with usb_phone(hidraw, 'match = "jabra"\n') as rig:
        await rig.wait(lambda: hidraw.opened == ["/dev/hidraw3"], what="the Jabra opened")


async def test_a_flood_of_reports_is_cut_and_said_once(usb_phone, caplog):
    caplog.set_level(logging.WARNING, logger="firmware_app.usb_headset")
    hidraw = FakeHidraw()
    hidraw.plug(d.JABRA_LIKE)
    async with usb_phone(hidraw) as rig:
        end = await opened(rig, hidraw)
        for _ in range(400):  # the volume report, nothing pressed; the phone reads on this test's loop
            await send_soon(end, b"\x01\x00")
        await rig.wait(lambda: "more than 200 reports a second" in caplog.text, what="the flood said")
        assert caplog.text.count("more than 200") == 1


async def test_the_keypad_sends_dtmf_in_a_call(usb_phone):
    hidraw = FakeHidraw()
    hidraw.plug(d.JABRA_LIKE)
    async with usb_phone(hidraw) as rig:
        end = await opened(rig, hidraw)
        await rig.set_state(PhoneState.IN_CALL)
        end.send(b"\x02\x00\x06")  # key 5 held (the keypad array: logical 6 is the sixth usage) ...
        end.send(b"\x02\x00\x00")  # ... and released
        end.send(b"\x02\x00\x0c")  # the pound key
        end.send(b"\x02\x00\x00")
        await rig.wait(lambda: len(rig.engine.sent("send_dtmf")) == 2, what="two digits sent")
        assert [c[1] for c in rig.engine.sent("send_dtmf")] == ["5", "#"]
