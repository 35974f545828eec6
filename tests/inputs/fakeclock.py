"""A fake clock and scheduler (the signature of ``loop.call_later``) for the gesture recognizers."""

from __future__ import annotations

import heapq
import itertools
from typing import Callable


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time stands still until ``advance`` moves it, firing the timers that fall due, in order."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    def schedule(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        assert delay >= 0, f"negative delay {delay}"
        timer = FakeTimer(self.now + delay, callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while self._timers and self._timers[0][0] <= until:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = when
            timer.callback()
        self.now = until

    def pending(self) -> int:
        return sum(1 for _, _, t in self._timers if not t.cancelled)
