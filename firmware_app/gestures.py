"""Turns a control's edges into gestures: single, double and long presses, and down/up for level inputs.

Pure: no I/O, no threads, no clock of its own. The time of each edge comes from the caller (or from an
injected clock) and timers go through an injected scheduler with the signature of ``loop.call_later``, so
the input plugins run the recognizers on the phone's loop and the tests drive them with a fake clock.

A button waits to see whether a second press follows only when ``wants_double()`` (asked at release
time, because the answer depends on the phone's state) says a double press means something now; otherwise
a single press is reported at once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, Callable, Protocol

import msgspec
from msgspec import Meta

from firmware_app.model import Gesture


class Cancellable(Protocol):
    def cancel(self) -> None: ...


#: ``schedule(delay_s, callback)``: run ``callback`` once after ``delay_s`` seconds (``loop.call_later``).
Scheduler = Callable[[float, Callable[[], None]], Cancellable]
Clock = Callable[[], float]


class ControlKind(enum.StrEnum):
    """How a control reports: momentary push button, or a switch that stays where it is put."""

    BUTTON = "button"  # press/release edges -> single, double, long
    LEVEL = "level"  # a hook or cradle switch: active -> down, inactive -> up


@dataclass(frozen=True, slots=True)
class Timing:
    """Thresholds of one control, in seconds."""

    long_press: float = 0.8  # held this long: a long press, reported while still held
    double_window: float = 0.4  # a second press starting this soon after the first release: a double press
    min_press: float = 0.03  # shorter presses are contact bounce and ignored; also a level's settle time

    def __post_init__(self) -> None:
        if not 0 <= self.min_press < self.long_press:
            raise ValueError("min_press must be >= 0 and shorter than long_press")
        if self.double_window <= 0:
            raise ValueError("double_window must be positive")


class TimingConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The per-control timing keys every input plugin's control table accepts (milliseconds)."""

    long_press_ms: Annotated[int, Meta(ge=100, le=10_000)] = 800
    double_press_ms: Annotated[int, Meta(ge=50, le=2_000)] = 400
    min_press_ms: Annotated[int, Meta(ge=0, le=90)] = 30

    def timing(self) -> Timing:
        return Timing(self.long_press_ms / 1000, self.double_press_ms / 1000, self.min_press_ms / 1000)


class _B(enum.Enum):
    IDLE = enum.auto()
    PRESSED = enum.auto()  # first press, not yet long
    HELD = enum.auto()  # the long press was reported; waiting for the release
    WAIT_SECOND = enum.auto()  # released; a second press would make a double
    PRESSED_SECOND = enum.auto()  # the second press is down


class ButtonRecognizer:
    """Press/release edges of a momentary button -> SINGLE, DOUBLE or LONG.

    * A press held for ``long_press`` is LONG, reported while the button is still held; its release is
      silent.
    * A press shorter than ``min_press`` never happened (contact bounce), whichever press it was.
    * On release, ``wants_double()`` decides: False reports SINGLE at once; True waits ``double_window``
      for a second press. A second press that is released makes DOUBLE; one held for ``long_press`` makes
      SINGLE (for the first press) then LONG.
    * Edges that repeat the current level (two presses in a row) are ignored.
    """

    def __init__(
        self,
        emit: Callable[[Gesture], None],
        *,
        wants_double: Callable[[], bool],
        clock: Clock,
        schedule: Scheduler,
        timing: Timing = Timing(),
    ) -> None:
        self._emit = emit
        self._wants_double = wants_double
        self._clock = clock
        self._schedule = schedule
        self.timing = timing
        self._state = _B.IDLE
        self._pressed_at = 0.0
        self._double_deadline = 0.0
        self._timer: Cancellable | None = None

    def edge(self, pressed: bool, at: float | None = None) -> None:
        (self.press if pressed else self.release)(at)

    def press(self, at: float | None = None) -> None:
        now = self._now(at)
        if self._state is _B.IDLE:
            self._state = _B.PRESSED
        elif self._state is _B.WAIT_SECOND:
            self._state = _B.PRESSED_SECOND
        else:
            return  # already down
        self._pressed_at = now
        self._arm(now + self.timing.long_press, self._on_long)

    def release(self, at: float | None = None) -> None:
        now = self._now(at)
        state = self._state
        if state not in (_B.PRESSED, _B.HELD, _B.PRESSED_SECOND):
            return
        self._cancel()
        if state is _B.HELD:
            self._state = _B.IDLE
            return
        if now - self._pressed_at < self.timing.min_press:  # bounce: as if the press never happened
            if state is _B.PRESSED:
                self._state = _B.IDLE
            else:
                self._state = _B.WAIT_SECOND
                self._arm(self._double_deadline, self._on_double_timeout)
            return
        if state is _B.PRESSED_SECOND:
            self._state = _B.IDLE
            self._emit(Gesture.DOUBLE)
        elif self._wants_double():
            self._state = _B.WAIT_SECOND
            self._double_deadline = now + self.timing.double_window
            self._arm(self._double_deadline, self._on_double_timeout)
        else:
            self._state = _B.IDLE
            self._emit(Gesture.SINGLE)

    def abort(self) -> None:
        """The control went away mid-press (a device disconnected): drop the press in progress.

        A press that was already complete and waits for a possible second one is still reported.
        """
        if self._state in (_B.PRESSED, _B.HELD):
            self._cancel()
            self._state = _B.IDLE
        elif self._state is _B.PRESSED_SECOND:
            self._state = _B.WAIT_SECOND
            self._arm(self._double_deadline, self._on_double_timeout)

    def close(self) -> None:
        """Forget any press in progress and cancel the timers (nothing more is reported)."""
        self._cancel()
        self._state = _B.IDLE

    def _on_long(self) -> None:
        self._timer = None
        if self._state is _B.PRESSED_SECOND:
            self._emit(Gesture.SINGLE)
        elif self._state is not _B.PRESSED:
            return
        self._state = _B.HELD
        self._emit(Gesture.LONG)

    def _on_double_timeout(self) -> None:
        self._timer = None
        if self._state is _B.WAIT_SECOND:
            self._state = _B.IDLE
            self._emit(Gesture.SINGLE)

    def _arm(self, deadline: float, callback: Callable[[], None]) -> None:
        self._cancel()
        self._timer = self._schedule(max(0.0, deadline - self._clock()), callback)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _now(self, at: float | None) -> float:
        return self._clock() if at is None else at


class LevelRecognizer:
    """Edges of a level input (hook switch, cradle) -> DOWN when it goes active, UP when it goes inactive.

    A new level counts once it has stayed ``settle`` seconds, so a bouncing contact reports one change, and
    only changes are reported. ``initial`` is the level the switch rests in when the phone starts.
    """

    def __init__(
        self,
        emit: Callable[[Gesture], None],
        *,
        clock: Clock,
        schedule: Scheduler,
        settle: float = 0.03,
        initial: bool = False,
    ) -> None:
        self._emit = emit
        self._clock = clock
        self._schedule = schedule
        self.settle = settle
        self._reported = initial
        self._level = initial
        self._timer: Cancellable | None = None

    @property
    def active(self) -> bool:
        """The last level reported (or the initial one)."""
        return self._reported

    def edge(self, active: bool, at: float | None = None) -> None:
        self._level = active
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if active == self._reported:
            return  # it bounced back before settling
        if self.settle <= 0:
            self._settled()
            return
        at = self._clock() if at is None else at
        self._timer = self._schedule(max(0.0, at + self.settle - self._clock()), self._settled)

    def abort(self) -> None:
        """The input went away: a change that had not settled yet never happened."""
        self.close()
        self._level = self._reported

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _settled(self) -> None:
        self._timer = None
        if self._level != self._reported:
            self._reported = self._level
            self._emit(Gesture.DOWN if self._level else Gesture.UP)
