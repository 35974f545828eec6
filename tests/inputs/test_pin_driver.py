"""The test plugin the end-to-end tests load into a phone process to press GPIO buttons from outside."""

from __future__ import annotations

import asyncio

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from firmware_app.errors import CommandError


@pytest.fixture
def mock_factory():
    previous, Device.pin_factory = Device.pin_factory, MockFactory()
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = previous


def test_drive_pin_presses_a_gpio_button_in_the_phone(mock_factory, phone_rig) -> None:
    body = '[gpio.buttons.main]\npin = 17\n[gpio.leds.status]\npin = 27\n[buttons.controls.main.in_call]\ndouble = "hold"\n'

    async def scenario() -> None:
        async with phone_rig(["softphone_gpio"], body, modules=("tests.plugins.pin_driver",)) as rig:
            actions: dict = {}
            rig.host.register_actions(lambda name, handler: actions.__setitem__(name, handler))
            drive, read = actions["drive_pin"], actions["read_pin"]
            assert drive(rig.phone, "17:low") == {"pin": 17, "state": 0}
            await asyncio.sleep(0.06)
            assert drive(rig.phone, "17:high") == {"pin": 17, "state": 1}
            assert await rig.wait_inputs(1) == [("gpio", "main", "single")]
            await rig.set_registered(True)
            from firmware_app.model import PhoneState

            await rig.set_state(PhoneState.IN_CALL)
            state = read(rig.phone, "27:clear")
            assert state["function"] == "output" and state["state"] == 1 and state["states"][-1][1] == 1
            assert read(rig.phone, "27")["states"] == [[0.0, 1]]
            with pytest.raises(CommandError, match="output"):
                drive(rig.phone, "27:low")
            with pytest.raises(CommandError, match="usage"):
                drive(rig.phone, "17:sideways")
            await rig.set_state(PhoneState.RINGING)
            assert await actions["press_pin"](rig.phone, "17:100") == {"pin": 17, "presses": 1}
            assert (await rig.wait_inputs(2))[1] == ("gpio", "main", "single")
            await rig.set_state(PhoneState.IN_CALL)  # a double press means a transfer here
            assert await actions["press_pin"](rig.phone, "17:80:120:80") == {"pin": 17, "presses": 2}
            assert (await rig.wait_inputs(3))[2] == ("gpio", "main", "double")
            await actions["press_pin"](rig.phone, "17:1000")
            assert (await rig.wait_inputs(4))[3] == ("gpio", "main", "long")
            with pytest.raises(CommandError, match="usage"):
                await actions["press_pin"](rig.phone, "17:100:100")

    asyncio.run(scenario())
