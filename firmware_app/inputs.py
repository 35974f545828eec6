"""What the input plugins share: a control wired to the phone, a backoff, and device states logged once.

An :class:`InputControl` takes a control's edges from any thread (gpiozero's, bleak's, the loop's own), runs
its recognizer from :mod:`firmware_app.gestures` on the phone's loop and hands the gestures to the phone.
Devices come and go (a BLE button sleeps, a headset walks away): a plugin retries them with a
:class:`Backoff` and reports them through a :class:`DeviceStatus`, which logs each change once, never once
per retry.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from firmware_app.gestures import ButtonRecognizer, Clock, ControlKind, LevelRecognizer, Timing
from firmware_app.model import ButtonEvent, Gesture

if TYPE_CHECKING:
    from firmware_app.hookspecs import Phone


class InputControl:
    """One named control of one input source, feeding the phone.

    ``edge_threadsafe`` may be called from any thread; ``edge`` and ``gesture`` on the loop thread only.
    ``gesture`` is for devices that recognise gestures themselves (a BLE remote that sends "double").
    """

    def __init__(
        self,
        phone: Phone,
        source: str,
        name: str,
        kind: ControlKind = ControlKind.BUTTON,
        timing: Timing = Timing(),
        *,
        initial: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        self.phone, self.source, self.name, self.kind = phone, source, name, kind
        self._clock = clock
        self.recognizer: ButtonRecognizer | LevelRecognizer
        if kind is ControlKind.BUTTON:
            self.recognizer = ButtonRecognizer(
                self.gesture,
                wants_double=lambda: phone.wants_double(source, name),
                clock=clock,
                schedule=phone.call_later,
                timing=timing,
            )
        else:
            self.recognizer = LevelRecognizer(
                self.gesture, clock=clock, schedule=phone.call_later, settle=timing.min_press, initial=initial
            )

    def edge_threadsafe(self, active: bool) -> None:
        """An edge seen on any thread: stamped now, recognised on the loop."""
        at = self._clock()
        try:
            self.phone.call_soon_threadsafe(self.recognizer.edge, active, at)
        except RuntimeError:  # the loop closed under a late edge during shutdown
            pass

    def edge(self, active: bool, at: float | None = None) -> None:
        self.recognizer.edge(active, at)

    def gesture(self, gesture: Gesture) -> None:
        self.phone.input(ButtonEvent(self.source, self.name, gesture))

    def abort(self) -> None:
        """The device went away: a press in progress is dropped (see the recognizers' ``abort``)."""
        self.recognizer.abort()

    def close(self) -> None:
        self.recognizer.close()


class Backoff:
    """Waits between attempts to reach a device: ``first``, doubling up to ``maximum``; ``reset`` on success."""

    def __init__(self, first: float = 1.0, maximum: float = 60.0, factor: float = 2.0) -> None:
        if not 0 < first <= maximum or factor < 1:
            raise ValueError("need 0 < first <= maximum and factor >= 1")
        self.first, self.maximum, self.factor = first, maximum, factor
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.first


class DeviceStatus:
    """The state of one input device, logged (and put on the event stream) once per change.

    ``set("missing", "no such device")`` on every failed retry logs the first time only; the next
    different state logs again. The event is ``input_device`` with ``source``, ``device`` and ``state``.
    """

    def __init__(self, log: logging.Logger, source: str, device: str, phone: Phone | None = None) -> None:
        self.log, self.source, self.device, self.phone = log, source, device, phone
        self.state: str | None = None

    def set(self, state: str, detail: str = "", *, level: int = logging.INFO, **fields: Any) -> bool:
        """Record ``state``; returns True when it changed (and was logged)."""
        if state == self.state:
            if detail:
                self.log.debug("%s %s still %s: %s", self.source, self.device, state, detail)
            return False
        self.state = state
        self.log.log(level, "%s %s: %s%s", self.source, self.device, state, f" ({detail})" if detail else "")
        if self.phone is not None:
            self.phone.emit("input_device", source=self.source, device=self.device, state=state, **fields)
        return True
