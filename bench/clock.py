"""A virtual clock for discrete-event benchmarks.

`VirtualClockLoop` is an asyncio event loop whose `time()` is a counter: when nothing is ready to
run, the selector jumps the counter to the next timer instead of sleeping. Simulated engine
latencies (`asyncio.sleep` on the loop's clock) then cost no real time, and timings depend only
on the latency model and the order of events, not on how busy this machine's CPUs are. CPU work
takes zero virtual time, so scheduler overhead is measured separately, in real CPU seconds.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualClockLoop):
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None):  # type: ignore[override]
        if timeout is None:  # no timers: only another thread can wake the loop
            return super().select(None)
        events = super().select(0)
        if not events and timeout > 0:
            self._loop.now += timeout
        return events


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now


def run(coro: Coroutine[Any, Any, T], virtual: bool = True) -> T:
    """Run `coro` to completion on a fresh loop (virtual clock unless `virtual` is false)."""
    loop = VirtualClockLoop() if virtual else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
