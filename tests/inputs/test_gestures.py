"""The gesture recognizers, driven by a fake clock: no sleeping, exact thresholds."""

from __future__ import annotations

import pytest

from tests.inputs.fakeclock import FakeClock
from firmware_app.gestures import ButtonRecognizer, LevelRecognizer, Timing
from firmware_app.model import Gesture

SINGLE, DOUBLE, LONG, DOWN, UP = Gesture.SINGLE, Gesture.DOUBLE, Gesture.LONG, Gesture.DOWN, Gesture.UP
TIMING = Timing(long_press=0.8, double_window=0.4, min_press=0.03)


class Rig:
    def __init__(self, wants_double: bool = False, timing: Timing = TIMING) -> None:
        self.clock = FakeClock()
        self.out: list[tuple[Gesture, float]] = []
        self.double = wants_double
        self.asked = 0
        self.button = ButtonRecognizer(
            lambda g: self.out.append((g, round(self.clock.now - 1000.0, 6))),
            wants_double=self._wants_double,
            clock=self.clock,
            schedule=self.clock.schedule,
            timing=timing,
        )

    def _wants_double(self) -> bool:
        self.asked += 1
        return self.double

    def press(self, held: float, then: float = 0.0) -> None:
        self.button.press()
        self.clock.advance(held)
        self.button.release()
        self.clock.advance(then)

    def gestures(self) -> list[Gesture]:
        return [g for g, _ in self.out]


def test_single_press_is_reported_at_release_when_no_double_is_mapped() -> None:
    rig = Rig(wants_double=False)
    rig.press(0.12)
    assert rig.out == [(SINGLE, 0.12)]
    assert rig.clock.pending() == 0


def test_single_press_waits_the_double_window_when_a_double_is_mapped() -> None:
    rig = Rig(wants_double=True)
    rig.press(0.1)
    assert rig.out == []
    rig.clock.advance(0.399)
    assert rig.out == []
    rig.clock.advance(0.002)
    assert rig.out == [(SINGLE, 0.5)]


def test_double_press() -> None:
    rig = Rig(wants_double=True)
    rig.press(0.1, then=0.2)
    rig.press(0.1)
    assert rig.out == [(DOUBLE, 0.4)]
    rig.clock.advance(2)
    assert rig.gestures() == [DOUBLE]


def test_wants_double_is_asked_at_release_time_so_the_phone_state_then_counts() -> None:
    rig = Rig(wants_double=False)
    rig.button.press()
    rig.clock.advance(0.1)
    rig.double = True  # the phone started ringing while the button was down
    rig.button.release()
    assert rig.out == [] and rig.asked == 1
    rig.clock.advance(0.5)
    assert rig.gestures() == [SINGLE]


def test_second_press_after_the_window_is_two_singles() -> None:
    rig = Rig(wants_double=True)
    rig.press(0.1, then=0.45)
    rig.press(0.1, then=0.45)
    assert rig.gestures() == [SINGLE, SINGLE]


def test_long_press_is_reported_while_held_and_its_release_is_silent() -> None:
    rig = Rig(wants_double=True)
    rig.button.press()
    rig.clock.advance(0.79)
    assert rig.out == []
    rig.clock.advance(0.02)
    assert rig.out == [(LONG, 0.8)]
    rig.clock.advance(1.5)  # long then release, much later
    rig.button.release()
    rig.clock.advance(1)
    assert rig.gestures() == [LONG]
    assert rig.asked == 0  # a long press never waits for a double


def test_press_just_under_long_is_a_single() -> None:
    rig = Rig()
    rig.press(0.79)
    assert rig.gestures() == [SINGLE]


def test_bounce_shorter_than_the_minimum_press_is_ignored() -> None:
    rig = Rig(wants_double=False)
    rig.press(0.005)
    rig.press(0.029)
    rig.clock.advance(1)
    assert rig.out == []


def test_contact_bounce_around_a_real_press_makes_one_single() -> None:
    rig = Rig(wants_double=True)
    b, c = rig.button, rig.clock
    # closing: make, break, make ... then held; opening: break, make, break
    for pressed, dt in [(1, 0.002), (0, 0.001), (1, 0.003), (0, 0.001), (1, 0.15), (0, 0.002), (1, 0.001), (0, 0)]:
        b.edge(bool(pressed))
        c.advance(dt)
    c.advance(1)
    assert rig.gestures() == [SINGLE]


def test_bounce_between_two_presses_keeps_the_double_window() -> None:
    rig = Rig(wants_double=True)
    rig.press(0.1, then=0.1)
    rig.press(0.004, then=0.35)  # a glitch inside the window: not a second press
    assert rig.out == [(SINGLE, 0.5)]  # the window still ends 0.4 s after the first release


def test_second_press_held_long_is_single_then_long() -> None:
    rig = Rig(wants_double=True)
    rig.press(0.1, then=0.1)
    rig.button.press()
    rig.clock.advance(0.85)
    assert rig.out == [(SINGLE, 1.0), (LONG, 1.0)]
    rig.button.release()
    rig.clock.advance(1)
    assert rig.gestures() == [SINGLE, LONG]


def test_repeated_edges_are_ignored() -> None:
    rig = Rig()
    rig.button.press()
    rig.clock.advance(0.05)
    rig.button.press()  # a second "pressed" without a release (an evdev reopen, a lost edge)
    rig.clock.advance(0.05)
    rig.button.release()
    rig.button.release()
    assert rig.out == [(SINGLE, 0.1)]


def test_close_cancels_pending_timers() -> None:
    rig = Rig(wants_double=True)
    rig.press(0.1)
    rig.button.close()
    rig.clock.advance(2)
    assert rig.out == [] and rig.clock.pending() == 0


def test_edge_times_from_another_thread_count_not_the_time_they_were_handled() -> None:
    rig = Rig()
    start = rig.clock.now
    rig.clock.advance(0.5)  # the loop was busy: both edges are handled late, with their own stamps
    rig.button.press(at=start)
    rig.button.release(at=start + 0.01)
    assert rig.out == []  # 10 ms between the edges: bounce, however late they were handled


def test_thresholds_are_per_control() -> None:
    rig = Rig(wants_double=True, timing=Timing(long_press=2.0, double_window=0.5, min_press=0.0))
    rig.press(0.001, then=0.45)
    rig.press(1.9)
    assert rig.gestures() == [DOUBLE]


def test_timing_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Timing(long_press=0.02, min_press=0.03)


# --- level inputs ----------------------------------------------------------------------------------------


def level_rig(initial: bool = False, settle: float = 0.03) -> tuple[FakeClock, LevelRecognizer, list]:
    clock = FakeClock()
    out: list[tuple[Gesture, float]] = []
    level = LevelRecognizer(
        lambda g: out.append((g, round(clock.now - 1000.0, 6))),
        clock=clock,
        schedule=clock.schedule,
        settle=settle,
        initial=initial,
    )
    return clock, level, out


def test_level_down_and_up() -> None:
    clock, level, out = level_rig()
    level.edge(True)
    clock.advance(2)
    level.edge(False)
    clock.advance(1)
    assert out == [(DOWN, 0.03), (UP, 2.03)]


def test_level_bounce_reports_one_change() -> None:
    clock, level, out = level_rig()
    for active, dt in [(True, 0.002), (False, 0.004), (True, 0.001), (False, 0.002), (True, 0.5)]:
        level.edge(active)
        clock.advance(dt)
    assert out == [(DOWN, 0.039)]


def test_level_glitch_shorter_than_settle_reports_nothing() -> None:
    clock, level, out = level_rig(initial=True)
    level.edge(False)
    clock.advance(0.01)
    level.edge(True)
    clock.advance(1)
    assert out == [] and level.active


def test_level_starting_active_reports_only_changes() -> None:
    clock, level, out = level_rig(initial=True)
    level.edge(True)
    clock.advance(1)
    level.edge(False)
    clock.advance(1)
    assert [g for g, _ in out] == [UP]


def test_level_without_settle_reports_at_once() -> None:
    clock, level, out = level_rig(settle=0)
    level.edge(True)
    assert out == [(DOWN, 0.0)]


def test_abort_drops_a_press_in_progress() -> None:
    rig = Rig(wants_double=False)
    rig.button.press()
    rig.clock.advance(0.2)
    rig.button.abort()  # the device went away while the key was down
    rig.clock.advance(2)
    rig.button.release()
    assert rig.out == []


def test_abort_during_a_second_press_still_reports_the_first() -> None:
    rig = Rig(wants_double=True)
    rig.press(0.1, then=0.1)
    rig.button.press()
    rig.clock.advance(0.1)
    rig.button.abort()
    rig.clock.advance(2)
    assert rig.out == [(SINGLE, 0.5)]


def test_level_abort_forgets_an_unsettled_change() -> None:
    clock, level, out = level_rig()
    level.edge(True)
    level.abort()
    clock.advance(1)
    assert out == [] and not level.active
