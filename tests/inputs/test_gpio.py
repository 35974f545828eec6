"""The GPIO plugin on gpiozero's MockFactory, with real threads and real time (short thresholds)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest
from gpiozero import Button, Device
from gpiozero.pins.mock import MockFactory

from firmware_app.errors import ConfigError
from firmware_app.model import MessageWaiting, PhoneState, TransferState, TransferStatus

FAST = "long_press_ms = 500\ndouble_press_ms = 400\n"


@pytest.fixture
def mock_pins() -> Iterator[MockFactory]:
    factory = MockFactory()
    previous, Device.pin_factory = Device.pin_factory, factory
    yield factory
    factory.reset()
    Device.pin_factory = previous


def press(pin, held: float) -> None:  # runs on a worker thread, like a finger
    import time

    pin.drive_low()
    time.sleep(held)
    pin.drive_high()


def test_single_press_is_reported_at_once_when_idle(mock_pins, phone_rig) -> None:
    async def scenario() -> None:
        async with phone_rig(["softphone_gpio"], f"[gpio.buttons.main]\npin = 17\n{FAST}") as rig:
            pin = mock_pins.pin(17)
            await asyncio.to_thread(press, pin, 0.08)
            assert await rig.wait_inputs(1) == [("gpio", "main", "single")]

    asyncio.run(scenario())


def test_double_press_when_the_state_maps_one_and_single_otherwise(mock_pins, phone_rig) -> None:
    body = f'[gpio.buttons.main]\npin = 17\n{FAST}\n[buttons.controls.main.in_call]\ndouble = "hold"\n'

    async def scenario() -> None:
        async with phone_rig(["softphone_gpio"], body) as rig:
            pin = mock_pins.pin(17)
            await rig.set_state(PhoneState.IN_CALL)
            await asyncio.to_thread(press, pin, 0.05)
            await asyncio.sleep(0.05)
            await asyncio.to_thread(press, pin, 0.05)
            assert await rig.wait_inputs(1) == [("gpio", "main", "double")]
            await asyncio.to_thread(press, pin, 0.05)  # alone: single, once the double window closed
            assert await rig.wait_inputs(2) == [("gpio", "main", "double"), ("gpio", "main", "single")]
            await rig.set_state(PhoneState.IDLE)  # nothing maps a double here: two presses are two singles
            await asyncio.to_thread(press, pin, 0.05)
            await asyncio.sleep(0.05)
            await asyncio.to_thread(press, pin, 0.05)
            assert (await rig.wait_inputs(4))[2:] == [("gpio", "main", "single")] * 2

    asyncio.run(scenario())


def test_long_press_and_bounce(mock_pins, phone_rig) -> None:
    body = f"[gpio.buttons.main]\npin = 17\n{FAST}[gpio.buttons.other]\npin = 18\n"

    async def scenario() -> None:
        async with phone_rig(["softphone_gpio"], body) as rig:
            pin = mock_pins.pin(17)
            for _ in range(3):  # contact bounce: pulses far shorter than min_press_ms
                pin.drive_low()
                pin.drive_high()
            await asyncio.to_thread(press, pin, 0.7)
            # the long press comes after the bounce and is unlike what a bounce could make: it is all there is
            assert await rig.witness(("gpio", "main", "long")) == [("gpio", "main", "long")]
            # another button, pressed after the long press was let go: its press proves the release was
            # handled, and the release of a long press says nothing
            await asyncio.to_thread(press, mock_pins.pin(18), 0.05)
            assert await rig.witness(("gpio", "other", "single")) == [("gpio", "main", "long"), ("gpio", "other", "single")]

    asyncio.run(scenario())


def test_hook_switch_is_a_level_input(mock_pins, phone_rig) -> None:
    # a normally closed cradle contact to ground: low while the handset rests, high (pulled up) when lifted
    body = '[gpio.buttons.hook]\npin = 22\nkind = "level"\nactive = "high"\n[gpio.buttons.main]\npin = 17\n'
    up, down = ("gpio", "hook", "up"), ("gpio", "hook", "down")

    async def scenario() -> None:
        async with phone_rig(["softphone_gpio"], body) as rig:
            pin = mock_pins.pin(22)
            assert pin.pull == "up" and pin.state  # the mock line floats up: "lifted" at start, no event
            pin.drive_low()  # put down: the first event, nothing before it (a start would have said "down")
            assert await rig.witness(up) == [up]
            pin.drive_high()  # lifted, with a bounce
            pin.drive_low()
            pin.drive_high()
            assert await rig.witness(down) == [up, down]
            # a press of another button, after the bounce settled: the witness that the bounce made one change
            await asyncio.to_thread(press, mock_pins.pin(17), 0.05)
            assert await rig.witness(("gpio", "main", "single")) == [up, down, ("gpio", "main", "single")]

    asyncio.run(scenario())


def test_the_hook_switch_maps_to_answer_and_hangup(mock_pins, phone_rig) -> None:
    from firmware_app.model import ButtonEvent, Gesture

    body = '[gpio.buttons.hook]\npin = 22\nkind = "level"\n'

    async def scenario() -> None:
        async with phone_rig(["softphone_gpio"], body) as rig:
            assert rig.host.map_input(ButtonEvent("gpio", "hook", Gesture.DOWN), PhoneState.RINGING) == "answer"
            assert rig.host.map_input(ButtonEvent("gpio", "hook", Gesture.UP), PhoneState.IN_CALL) == "hangup"

    asyncio.run(scenario())


def states(pin) -> list[tuple[float, bool]]:
    return [(round(s.timestamp, 3), s.state) for s in pin.states]


async def recorded(pin, count: int, timeout: float = 5.0) -> None:
    """Wait until the mock pin recorded ``count`` states (counting the one clear_states() noted)."""
    deadline = time.monotonic() + timeout
    while len(pin.states) < count:
        assert time.monotonic() < deadline, f"the pin only went {states(pin)}"
        await asyncio.sleep(0.01)


def assert_pattern(pin, expected: list[tuple[float, bool]]) -> None:
    """The pin went through these levels, each after this long since the previous change: never early,
    and at most 0.2 s late (timers run late on a loaded machine, never early). 0.2 s still tells every
    pattern from the others."""
    actual = states(pin)[: len(expected)]
    levels_ok = [level for _, level in actual] == [level for _, level in expected]
    times_ok = all(e - 0.01 <= t <= e + 0.2 for (t, _), (e, _) in zip(actual, expected))
    assert levels_ok and times_ok, f"the pin went {states(pin)}, expected {expected}"


def test_status_led_follows_the_desk_phone_scheme(mock_pins, phone_rig) -> None:
    async def scenario() -> None:
        async with phone_rig(["softphone_gpio"], "[gpio.leds.status]\npin = 27\n") as rig:
            pin = mock_pins.pin(27)
            assert pin.function == "output" and not pin.state  # not registered: off
            await rig.set_registered(True)
            assert not pin.state  # idle: off

            pin.clear_states()
            await rig.set_state(PhoneState.RINGING)  # fast blink: 0.125 s on, 0.125 s off
            await recorded(pin, 6)
            assert_pattern(pin, [(0, False), (0, True), (0.125, False), (0.125, True), (0.125, False), (0.125, True)])

            await rig.set_state(PhoneState.IN_CALL)  # solid
            assert pin.state
            pin.clear_states()
            began = time.monotonic()
            await asyncio.sleep(0.3)  # in the call a while (any blink would show in it); then put on hold:
            in_call = time.monotonic() - began
            await rig.set_state(PhoneState.ON_HOLD)  # slow blink: 0.5 s / 0.5 s, from where it was (on)
            await recorded(pin, 3)
            # the hold's first change is the witness: the LED stayed lit, without a change, the whole call
            assert_pattern(pin, [(0, True), (in_call + 0.5, False), (0.5, True)])

            await rig.set_state(PhoneState.IN_CALL)  # resumed
            assert pin.state
            pin.clear_states()
            await rig.set_state(PhoneState.TRANSFERRING)  # double flash: on .1 off .1 on .1 off .7, from on
            await recorded(pin, 5)
            assert_pattern(pin, [(0, True), (0.1, False), (0.1, True), (0.1, False), (0.7, True)])

            await rig.set_state(PhoneState.IDLE)
            assert not pin.state
            await rig.set_registered(False)
            rig.host.message_waiting(MessageWaiting(True, new=2))
            assert not pin.state  # not registered wins over voicemail
            pin.clear_states()
            await rig.set_registered(True)  # message waiting: a blip every 3 s
            await recorded(pin, 4)  # the next blip is the witness: dark, without a change, for 2.9 s between
            assert_pattern(pin, [(0, False), (0, True), (0.1, False), (2.9, True)])
            rig.host.message_waiting(MessageWaiting(False))
            assert not pin.state
            conditions = [e["condition"] for e in rig.events if e["event"] == "led"]
            assert conditions == [
                "not_registered", "idle", "ringing", "in_call", "on_hold", "in_call", "transferring", "idle",
                "not_registered", "message_waiting", "idle",
            ]

    asyncio.run(scenario())


def test_status_led_shows_a_failed_transfer_then_the_call(mock_pins, phone_rig) -> None:
    body = "[gpio.leds.status]\npin = 27\ntransfer_failed_ms = 400\n"

    async def scenario() -> None:
        async with phone_rig(["softphone_gpio"], body) as rig:
            pin = mock_pins.pin(27)
            await rig.set_registered(True)
            await rig.set_state(PhoneState.TRANSFERRING)
            await rig.set_state(PhoneState.IN_CALL)  # the transferee's call failed: back in the call...
            pin.clear_states()
            rig.host.transfer_status(TransferStatus(1, "desk", "sip:1003@pbx.test", TransferState.FAILED, 486))
            await recorded(pin, 5)  # ... with a flicker (0.05 / 0.05) for 0.4 s
            assert_pattern(pin, [(0, True), (0.05, False), (0.05, True), (0.05, False), (0.05, True)])

            def after_failure() -> list[str]:
                conditions = [e["condition"] for e in rig.events if e["event"] == "led"]
                return conditions[conditions.index("transfer_failed"):] if "transfer_failed" in conditions else []

            await rig.wait(lambda: "in_call" in after_failure(), 3, "in_call after the failure")
            assert pin.state  # then solid again
            assert after_failure() == ["transfer_failed", "in_call"]

    asyncio.run(scenario())


def test_patterns_are_configurable(mock_pins, phone_rig) -> None:
    body = '[gpio.leds.status]\npin = 27\nactive = "low"\n[gpio.leds.status.patterns]\nidle = "on"\nringing = [[0.05, 0.15]]\n'

    async def scenario() -> None:
        async with phone_rig(["softphone_gpio"], body) as rig:
            pin = mock_pins.pin(27)
            await rig.set_registered(True)
            assert pin.state is False  # "on", active low: the pin is driven low
            pin.clear_states()
            await rig.set_state(PhoneState.RINGING)
            await recorded(pin, 4)
            assert_pattern(pin, [(0, False), (0.05, True), (0.15, False), (0.05, True)])  # on = low

    asyncio.run(scenario())


def test_shutdown_releases_every_pin(mock_pins, phone_rig) -> None:
    body = "[gpio.buttons.main]\npin = 17\n[gpio.leds.status]\npin = 27\n"

    async def scenario() -> None:
        async with phone_rig(["softphone_gpio"], body) as rig:
            await rig.set_registered(True)
            await rig.set_state(PhoneState.RINGING)
            await asyncio.sleep(0.05)
        assert not mock_pins.pin(27).state
        Button(17).close()  # free again
        from gpiozero import LED

        LED(27).close()

    asyncio.run(scenario())


def logged(caplog, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


def test_a_busy_pin_is_reported_once_and_retried(mock_pins, phone_rig, caplog_inputs) -> None:
    body = f"[gpio]\nretry_max_s = 1\n[gpio.buttons.main]\npin = 17\n{FAST}"

    async def scenario() -> None:
        squatter = Button(17)
        async with phone_rig(["softphone_gpio"], body) as rig:
            # the witness of a retry that failed (checked below: quietly): its debug line
            await rig.wait(lambda: logged(caplog_inputs, "GPIO17) still unavailable"), 5, "a failed retry")
            squatter.close()
            await rig.wait(lambda: ("buttons.main (GPIO17)", "ready") in rig.device_states("gpio"), 3)
            assert rig.device_states("gpio") == [("buttons.main (GPIO17)", "unavailable"), ("buttons.main (GPIO17)", "ready")]
            await asyncio.to_thread(press, mock_pins.pin(17), 0.05)
            assert await rig.wait_inputs(1) == [("gpio", "main", "single")]
        warnings = [r for r in caplog_inputs.records if r.levelno >= logging.WARNING and "GPIO17" in r.getMessage()]
        assert len(warnings) == 1

    asyncio.run(scenario())


def test_without_gpio_the_phone_says_so_once_and_keeps_working(phone_rig, caplog_inputs, monkeypatch) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    previous, Device.pin_factory = Device.pin_factory, None
    body = "[gpio.buttons.main]\npin = 17\n[gpio.buttons.hook]\npin = 22\nkind = \"level\"\n[gpio.leds.status]\npin = 27\n"
    from firmware_app.model import ButtonEvent, Gesture

    async def scenario() -> None:
        async with phone_rig(["softphone_gpio"], body) as rig:
            await rig.set_registered(True)
            await rig.set_state(PhoneState.RINGING)  # no LED to drive: nothing breaks
            rig.phone.input(ButtonEvent("cli", "main", Gesture.SINGLE))
            assert await rig.wait_inputs(1) == [("cli", "main", "single")]
            assert rig.device_states("gpio") == [("gpio", "unavailable")]

    try:
        asyncio.run(scenario())
    finally:
        Device.pin_factory = previous
    errors = [r for r in caplog_inputs.records if r.levelno >= logging.WARNING and r.name == "firmware_app.gpio"]
    assert len(errors) == 1 and "no GPIO on this machine" in errors[0].getMessage()


@pytest.mark.parametrize(
    ("body", "key", "expected"),
    [
        ("[gpio.buttons.main]\npin = 40\n", "gpio.buttons.main.pin", "<= 27"),
        ("[gpio.buttons.main]\npin = 17\npull = \"sideways\"\n", "gpio.buttons.main.pull", "'up'"),
        ("[gpio.buttons.main]\npin = 17\npull = \"off\"\n", "gpio.buttons.main.active", "required"),
        ("[gpio.buttons.main]\npin = 17\nkind = \"toggle\"\n", "gpio.buttons.main.kind", "'button'"),
        ("[gpio.buttons.main]\npin = 17\nlong_press = 5\n", "gpio.buttons.main.long_press", "unknown key"),
        ("[gpio.buttons.main]\npin = 17\n[gpio.leds.status]\npin = 17\n", "gpio.leds.status.pin", "already used"),
        ("[gpio.leds.status]\npin = 27\n[gpio.leds.status.patterns]\nringing = \"disco\"\n",
         "gpio.leds.status.patterns.ringing", "disco"),
        ("[gpio.buttons.main]\npin = 17\n[buttons.controls.mian.idle]\nsingle = \"call:1001\"\n",
         "buttons.controls.mian", "main (gpio)"),
        ("[gpio.buttons.main]\npin = 17\n[buttons.controls.main.idle]\nsingle = \"teleport\"\n",
         "buttons.controls.main.idle.single", "unknown action"),
        ("[gpio.buttons.main]\npin = 17\n[buttons.controls.main.idle]\ntriple = \"hangup\"\n",
         "buttons.controls.main.idle.triple", "unknown gesture"),
    ],
)
def test_configuration_mistakes_name_the_file_and_key(tmp_path, body, key, expected) -> None:
    from firmware_app import app
    from tests.inputs.conftest import write_config

    path = write_config(tmp_path, ["softphone_calls", "softphone_buttons", "softphone_gpio"], body)
    with pytest.raises(ConfigError) as e:
        app.prepare(str(path), secrets=False, strict=True)
    assert e.value.file == str(path) and e.value.key == key and expected in e.value.expected, str(e.value)


def test_status_led_shows_do_not_disturb_while_idle(mock_pins, phone_rig, tmp_path) -> None:
    body = f'[gpio.leds.status]\npin = 27\n[dnd]\nstate_file = "{tmp_path / "dnd.json"}"\n'

    async def scenario() -> None:
        async with phone_rig(["softphone_gpio"], body) as rig:
            pin = mock_pins.pin(27)
            await rig.set_registered(True)
            pin.clear_states()
            await rig.phone.run_action("dnd:on")  # mostly on: 1.8 s on, 0.2 s off
            await recorded(pin, 4)
            assert_pattern(pin, [(0, False), (0, True), (1.8, False), (0.2, True)])
            await rig.set_state(PhoneState.IN_CALL)  # a call shows as a call
            assert pin.state
            await rig.set_state(PhoneState.IDLE)
            await rig.phone.run_action("dnd:off")
            assert not pin.state
            conditions = [e["condition"] for e in rig.events if e["event"] == "led"]
            assert conditions == ["not_registered", "idle", "dnd", "in_call", "dnd", "idle"]

    asyncio.run(scenario())


def test_a_busy_lamp_shows_a_colleagues_line(mock_pins, phone_rig) -> None:
    body = '[gpio.leds.anna]\npin = 22\nrole = "line"\nline = "1003"\n'
    anna = "sip:1003@127.0.0.1:5060"

    async def scenario() -> None:
        async with phone_rig(["softphone_gpio"], body) as rig:
            pin = mock_pins.pin(22)
            assert rig.engine.sent("watch_lines") == [([anna],)]
            assert not pin.state  # not known yet: dark
            rig.engine.line(anna, "busy")
            await rig.wait(lambda: pin.state, what="lit while anna is busy")
            pin.clear_states()
            rig.engine.line(anna, "ringing")  # fast blink
            await recorded(pin, 4)
            assert_pattern(pin, [(0, True), (0, False), (0, True), (0.125, False)])
            rig.engine.line(anna, "idle")

            def conditions() -> list[str]:
                return [e["condition"] for e in rig.events if e["event"] == "led" and e["name"] == "anna"]

            await rig.wait(lambda: conditions()[-1:] == ["idle"], what="idle shown")
            assert not pin.state
            assert conditions() == ["unknown", "busy", "ringing", "idle"]

    asyncio.run(scenario())


def test_status_led_says_a_software_update_is_under_way_but_a_call_first(mock_pins, phone_rig) -> None:
    async def scenario() -> None:
        async with phone_rig(["softphone_gpio"], "[gpio.leds.status]\npin = 27\n") as rig:
            pin = mock_pins.pin(27)
            await rig.set_registered(True)
            await rig.set_state(PhoneState.IN_CALL)
            rig.phone.set_update("downloading", "https://updates.example/1.1.0.raucb")  # downloads during a call
            assert pin.state  # the call shows
            pin.clear_states()
            await rig.set_state(PhoneState.IDLE)  # triple flash: on .08 off .12 on .08 off .12 on .08 off .92
            await recorded(pin, 7)  # from on (the call's); the long pause is the witness of the third flash
            assert_pattern(pin, [(0, True), (0.08, False), (0.12, True), (0.08, False), (0.12, True), (0.08, False),
                                 (0.92, True)])
            rig.phone.set_update("")  # refused, or nothing to do: back to idle
            assert not pin.state
            assert rig.phone.status()["update"] is None
            conditions = [e["condition"] for e in rig.events if e["event"] == "led"]
            assert conditions == ["not_registered", "idle", "in_call", "updating", "idle"]

    asyncio.run(scenario())
