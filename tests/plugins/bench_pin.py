"""Bench plugin: press a gpiozero mock pin from a thread of its own and note the exact time of each edge.

Loaded by ``python -m bench`` with ``[plugins] modules = ["tests.plugins.bench_pin"]`` in a phone run with
``GPIOZERO_PIN_FACTORY=mock``. On a Pi, gpiozero's edge callbacks come on lgpio's thread, not on the
phone's loop; this plugin's driver thread stands in for it, so an edge reaches the phone the same way.

    firmware-app action bench_press:17:50:7   # in 20 ms: pin 17 low, 50 ms later high; remember as press 7
    firmware-app action bench_edges           # {"7": [time of the low edge, time of the high edge]}; forgets them

The action returns at once and the press starts 20 ms later, so the control socket's reply is long gone
when the edges happen: the loop has nothing else to do but the press. Times are ``time.time()`` taken
just before the pin is driven (the edge as the wire's clock sees it: Kamailio's log uses the same clock).

``bench_objects`` (live Python objects by type) and ``bench_trim`` (glibc ``malloc_trim``) tell a leak from
memory the allocator keeps after use, at the end of the soak.

With ``BENCH_PROBE=1`` in its environment it also notes when each button event reaches the phone's mapping
hook (``bench_probes``): a split of the edge-to-wire time into "edge -> phone loop" and "loop -> wire".
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any

from firmware_app import hookimpl
from firmware_app.errors import CommandError
from firmware_app.hookspecs import RegisterAction
from tests.plugins.pin_driver import _mock_pin

DELAY_S = 0.02

_jobs: queue.SimpleQueue[tuple[int, float, str] | None] = queue.SimpleQueue()
_edges: dict[str, list[float]] = {}
_probes: list[float] = []
_driver: threading.Thread | None = None
_probe = os.environ.get("BENCH_PROBE") == "1"


def _pin(number: int) -> Any:
    return _mock_pin(str(number))  # the same lookup as the pin_driver test plugin


def _drive() -> None:
    while (job := _jobs.get()) is not None:
        number, hold, tag = job
        try:
            pin = _pin(number)
        except Exception:
            continue
        time.sleep(DELAY_S)
        pressed = time.time()
        pin.drive_low()
        time.sleep(hold)
        released = time.time()
        pin.drive_high()
        _edges[tag] = [pressed, released]


def bench_press(phone: Any, argument: str | None) -> dict[str, Any]:
    try:
        pin, hold_ms, tag = (argument or "").split(":")
        number, hold = int(pin), int(hold_ms) / 1000
    except ValueError:
        raise CommandError("usage: bench_press:PIN:HOLD_MS:TAG") from None
    _pin(number)  # fail here, not on the driver thread
    _jobs.put((number, hold, tag))
    return {"queued": tag}


def bench_edges(phone: Any, argument: str | None) -> dict[str, list[float]]:
    edges = dict(_edges)
    for tag in edges:
        _edges.pop(tag, None)
    _forget_pin_history()
    return edges


def _forget_pin_history() -> None:
    """A MockPin records every change it ever saw (a real pin keeps nothing): forget it, or a soak counts it."""
    from gpiozero import Device

    for pin in list(getattr(Device.pin_factory, "pins", {}).values()):
        if hasattr(pin, "clear_states"):
            pin.clear_states()


def bench_probes(phone: Any, argument: str | None) -> list[float]:
    probes = list(_probes)
    del _probes[: len(probes)]
    return probes


def bench_objects(phone: Any, argument: str | None) -> dict[str, int]:
    """Live Python objects by type, the most numerous first (after a full collection): a leak's suspects."""
    import collections
    import gc

    gc.collect()
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    return dict(counts.most_common(int(argument or 25)))


def bench_trim(phone: Any, argument: str | None) -> int:
    """Give the heap's free pages back to the system (glibc malloc_trim): what stays is memory in use."""
    import ctypes

    return int(ctypes.CDLL("libc.so.6").malloc_trim(0))


@hookimpl
def softphone_register_actions(register: RegisterAction) -> None:
    register("bench_press", bench_press)
    register("bench_edges", bench_edges)
    register("bench_probes", bench_probes)
    register("bench_objects", bench_objects)
    register("bench_trim", bench_trim)


@hookimpl
def softphone_startup(phone: Any) -> None:
    global _driver
    if _driver is None:  # started with the phone, so the soak counts it among the threads from the start
        _driver = threading.Thread(target=_drive, name="bench-pin", daemon=True)
        _driver.start()


@hookimpl
def softphone_shutdown(phone: Any) -> None:
    global _driver
    if _driver is not None:
        _jobs.put(None)
        _driver.join(1.0)
        _driver = None


if _probe:

    @hookimpl(tryfirst=True)
    def softphone_map_input(event: Any, state: Any) -> None:
        _probes.append(time.time())
        return None
