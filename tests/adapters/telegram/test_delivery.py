"""The global send pace and the pause after flood control, on a simulated clock."""

from __future__ import annotations

import asyncio

from adapters.telegram.delivery import SendPacer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def sends_by(clock: Clock, pacer: SendPacer, count: int) -> list[float]:
    stamps = []
    for _ in range(count):
        await pacer.acquire()
        stamps.append(clock.now)
    return stamps


async def test_thirty_a_second_after_the_burst() -> None:
    clock = Clock()
    pacer = SendPacer(30, clock=clock, sleep=clock.sleep)
    stamps = await sends_by(clock, pacer, 90)
    assert stamps[:30] == [0.0] * 30  # the burst
    # 60 more at 30/s take two seconds.
    assert abs(stamps[-1] - 2.0) < 1e-9
    in_any_second = max(sum(1 for s in stamps if t < s <= t + 1) for t in stamps)
    assert in_any_second <= 30


async def test_flood_control_pauses_every_sender() -> None:
    clock = Clock()
    pacer = SendPacer(None, clock=clock, sleep=clock.sleep)
    await pacer.acquire()
    pacer.pause(7)
    assert pacer.paused_for == 7
    stamps = await sends_by(clock, pacer, 3)
    assert stamps == [7.0, 7.0, 7.0]


async def test_waiters_are_served_in_order() -> None:
    clock = Clock()
    pacer = SendPacer(1, burst=1, clock=clock, sleep=clock.sleep)
    order: list[int] = []

    async def sender(n: int) -> None:
        await pacer.acquire()
        order.append(n)

    await asyncio.gather(*(sender(n) for n in range(5)))
    assert order == [0, 1, 2, 3, 4]
    assert clock.now == 4.0
