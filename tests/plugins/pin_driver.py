"""Test plugin: drive and read gpiozero mock pins inside a running phone, through ordinary actions.

Load it with ``[plugins] modules = ["tests.plugins.pin_driver"]`` in a phone run with
``GPIOZERO_PIN_FACTORY=mock``, then from outside::

    firmware-app action drive_pin:17:low     # the button on BCM 17 (pulled up) is pressed
    firmware-app action drive_pin:17:high    # ... and released
    firmware-app action press_pin:17:100             # pressed for 100 ms, timed inside the phone
    firmware-app action press_pin:17:100:150:100     # press 100 ms, 150 ms gap, press 100 ms: a double
    firmware-app action read_pin:27          # {"pin": 27, "state": 1, "states": [[0.0, 0], [0.12, 1], ...]}

Each CLI call takes a few hundred milliseconds, too slow to time a double press from outside: ``press_pin``
times the whole sequence on the phone's loop and returns when it is done. It presses by driving the pin
low (a button to ground with the default pull-up); ``press_pin:17:100:high`` presses a pulled-down one.

``states`` are gpiozero's recorded changes: seconds since the previous change, and the level.
``read_pin:27:clear`` also forgets them, so the next read shows what happened since.
"""

from __future__ import annotations

import asyncio
from typing import Any

from firmware_app import hookimpl
from firmware_app.errors import CommandError
from firmware_app.hookspecs import RegisterAction


def _mock_pin(spec: str) -> Any:
    from gpiozero import Device
    from gpiozero.pins.mock import MockPin

    try:
        number = int(spec)
    except ValueError:
        raise CommandError(f"expected a BCM pin number, got {spec!r}") from None
    factory = Device.pin_factory
    if factory is None:
        factory = Device.pin_factory = Device._default_pin_factory()
    pin = factory.pin(number)
    if not isinstance(pin, MockPin):
        raise CommandError("pin actions need gpiozero's mock pins: run the phone with GPIOZERO_PIN_FACTORY=mock")
    return pin


def drive_pin(phone: Any, argument: str | None) -> dict[str, Any]:
    spec, _, level = (argument or "").partition(":")
    if level not in ("low", "high"):
        raise CommandError("usage: drive_pin:PIN:low or drive_pin:PIN:high")
    pin = _mock_pin(spec)
    if pin.function != "input":
        raise CommandError(f"GPIO{spec} is an output; only inputs can be driven")
    pin.drive_low() if level == "low" else pin.drive_high()
    return {"pin": int(spec), "state": int(pin.state)}


async def press_pin(phone: Any, argument: str | None) -> dict[str, Any]:
    spec, *rest = (argument or "").split(":")
    active = "low"
    if rest and rest[-1] in ("low", "high"):
        active = rest.pop()
    try:
        times = [int(t) / 1000 for t in rest]
    except ValueError:
        times = []
    if not times or len(times) % 2 == 0 or any(t < 0 or t > 10 for t in times):
        raise CommandError("usage: press_pin:PIN:MS[:GAP_MS:MS...][:low|high], times up to 10000 ms")
    pin = _mock_pin(spec)
    if pin.function != "input":
        raise CommandError(f"GPIO{spec} is an output; only inputs can be driven")
    press, release = (pin.drive_low, pin.drive_high) if active == "low" else (pin.drive_high, pin.drive_low)
    for i, seconds in enumerate(times):
        (press if i % 2 == 0 else release)()
        await asyncio.sleep(seconds)
    release()
    return {"pin": int(spec), "presses": (len(times) + 1) // 2}


def read_pin(phone: Any, argument: str | None) -> dict[str, Any]:
    spec, _, option = (argument or "").partition(":")
    if option not in ("", "clear"):
        raise CommandError("usage: read_pin:PIN or read_pin:PIN:clear")
    pin = _mock_pin(spec)
    result = {
        "pin": int(spec),
        "function": pin.function,
        "state": int(pin.state),
        "states": [[round(s.timestamp, 4), int(s.state)] for s in pin.states],
    }
    if option == "clear":
        pin.clear_states()
    return result


@hookimpl
def softphone_register_actions(register: RegisterAction) -> None:
    register("drive_pin", drive_pin)
    register("press_pin", press_pin)
    register("read_pin", read_pin)
