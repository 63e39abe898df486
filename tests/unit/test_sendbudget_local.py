"""The in-process send budget on virtual time: exact schedules, no real waiting."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Coroutine
from typing import Any

import pytest

from core.sendbudget import BudgetLoad, LocalSendBudget, RedisSendBudget, send_budget_for


class VirtualTime:
    """A clock and a sleep for the budget. ``run`` jumps the clock from one sleeper's wake-up
    to the next, in time order (ties in the order they went to sleep)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._count += 1
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + seconds, self._count, future))
        await future

    async def run(self, *tasks: asyncio.Task[Any]) -> None:
        while True:
            await settle()
            if all(task.done() for task in tasks):
                for task in tasks:
                    task.result()  # surface a failure
                return
            assert self._timers, "tasks are stuck with no sleeper to wake"
            when, _, future = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            future.set_result(None)

    def budget(self, rate: float | None, group_per_minute: int = 20) -> LocalSendBudget:
        return LocalSendBudget(rate, group_per_minute, clock=self.clock, sleep=self.sleep)


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(20):
        await asyncio.sleep(0)


def start(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coro)


async def send_times(
    vt: VirtualTime, budget: LocalSendBudget, count: int, chat: str = "c", group: bool = False
) -> list[float]:
    times: list[float] = []

    async def sender() -> None:
        for _ in range(count):
            await budget.acquire(chat, group)
            times.append(vt.now)

    await vt.run(start(sender()))
    return times


def finishes_at_once(coro: Coroutine[Any, Any, None]) -> bool:
    """True when the coroutine completes without ever suspending (no sleep, no lock wait)."""
    try:
        coro.send(None)
    except StopIteration:
        return True
    coro.close()
    return False


async def test_without_a_pace_acquire_never_suspends() -> None:
    vt = VirtualTime()
    budget = vt.budget(None)
    assert all(finishes_at_once(budget.acquire("c", False)) for _ in range(1000))
    await budget.pause(1.0)
    vt.now = 2.0  # the pause is over
    assert all(finishes_at_once(budget.acquire("c", False)) for _ in range(1000))
    assert vt.slept == []
    assert await budget.backlog() == 0.0


async def test_sends_are_evenly_spaced_at_the_rate() -> None:
    vt = VirtualTime()
    times = await send_times(vt, vt.budget(10), 5)
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


async def test_an_idle_budget_banks_no_burst() -> None:
    vt = VirtualTime()
    budget = vt.budget(10)
    await send_times(vt, budget, 3)
    vt.now = 100.0
    assert await send_times(vt, budget, 3) == pytest.approx([100.0, 100.1, 100.2])


async def test_waiters_are_served_in_arrival_order() -> None:
    vt = VirtualTime()
    budget = vt.budget(10)
    served: list[tuple[int, float]] = []

    async def sender(n: int) -> None:
        await budget.acquire(f"chat-{n}", False)
        served.append((n, vt.now))

    await vt.run(*(start(sender(n)) for n in range(6)))
    assert [n for n, _ in served] == list(range(6))
    assert [at for _, at in served] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])


async def test_backlog_counts_the_sends_booked_ahead() -> None:
    vt = VirtualTime()
    budget = vt.budget(10)
    assert await budget.backlog() == 0.0
    tasks = [start(budget.acquire("c", False)) for _ in range(10)]
    await settle()  # every sender has booked its slot and sleeps
    assert await budget.backlog() == pytest.approx(1.0)
    await vt.run(*tasks)
    assert vt.now == pytest.approx(0.9)
    assert await budget.backlog() == pytest.approx(0.1)
    vt.now = 1.0
    assert await budget.backlog() == 0.0


async def test_load_says_how_long_the_rate_has_been_used_without_a_gap() -> None:
    vt = VirtualTime()
    budget = vt.budget(10)
    assert await budget.load() == BudgetLoad(0.0, 0.0)
    vt.now = 5.0
    tasks = [start(budget.acquire("c", False)) for _ in range(20)]
    await settle()
    assert await budget.load() == BudgetLoad(pytest.approx(2.0), 0.0)
    await vt.run(*tasks)  # the last send left at 6.9, back to back since 5.0
    assert await budget.load() == BudgetLoad(pytest.approx(0.1), pytest.approx(1.9))
    vt.now = 7.05  # a gap: the next send finds the rate idle and starts a new run
    await budget.acquire("c", False)
    assert await budget.load() == BudgetLoad(pytest.approx(0.1), 0.0)


async def test_sends_spaced_wider_than_the_rate_never_keep_it_busy() -> None:
    vt = VirtualTime()
    budget = vt.budget(10)
    for n in range(30):
        vt.now = n * 0.11
        await budget.acquire("c", False)
        assert (await budget.load()).busy_for == 0.0


async def test_a_pause_holds_every_send_and_is_never_shortened() -> None:
    vt = VirtualTime()
    budget = vt.budget(None)
    await budget.pause(5.0)
    await budget.pause(1.0)
    assert await budget.paused_for() == 5.0
    times = await send_times(vt, budget, 2)
    assert times == [5.0, 5.0]
    assert await budget.paused_for() == 0.0


async def test_a_pause_also_holds_a_send_already_waiting_for_its_slot() -> None:
    vt = VirtualTime()
    budget = vt.budget(1)
    await budget.acquire("c", False)  # t=0; the next slot is t=1
    waiting = start(budget.acquire("c", False))
    await settle()
    await budget.pause(10.0)  # Telegram said 429 while the second send waited
    await vt.run(waiting)
    assert vt.now == 10.0


async def test_a_group_gets_at_most_its_limit_in_any_minute() -> None:
    vt = VirtualTime()
    budget = vt.budget(None, group_per_minute=3)
    for at in (0.0, 10.0, 20.0):
        vt.now = at
        await budget.acquire("g", True)
    # The 4th waits until the 1st is a minute old, the 5th until the 2nd is.
    assert await send_times(vt, budget, 2, "g", group=True) == [60.0, 70.0]
    # Other groups and private chats are not held by this group's limit.
    assert await send_times(vt, budget, 3, "other", group=True) == [70.0] * 3
    assert await send_times(vt, budget, 5, "g", group=False) == [70.0] * 5


async def test_a_group_send_also_keeps_the_global_pace() -> None:
    vt = VirtualTime()
    budget = vt.budget(1, group_per_minute=2)
    assert await send_times(vt, budget, 3, "g", group=True) == [0.0, 1.0, 60.0]


async def test_quiet_groups_are_forgotten() -> None:
    vt = VirtualTime()
    budget = vt.budget(None)
    for n in range(5000):
        await budget.acquire(f"early{n}", True)
    vt.now = 61.0
    for n in range(5000):
        await budget.acquire(f"late{n}", True)
    # The table is swept when it doubles, so it stays within twice the groups of the last minute.
    assert len(budget._groups) == 5000
    assert all(chat.startswith("late") for chat in budget._groups)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        LocalSendBudget(0)
    with pytest.raises(ValueError):
        LocalSendBudget(30, group_per_minute=0)


async def test_send_budget_for_picks_by_url() -> None:
    local = send_budget_for(None, 30)
    assert isinstance(local, LocalSendBudget)
    shared = send_budget_for("redis://127.0.0.1:6379/0", 30)  # nothing connects until used
    assert isinstance(shared, RedisSendBudget)
    await local.aclose()
    await shared.aclose()
