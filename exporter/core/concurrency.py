"""Slot arithmetic: how many of the concurrency slots the checks expected slow may hold at once, so that they
and the other checks end together instead of one group trailing the other.

A cycle starts its slowest checks first (last cycle's seconds, engine/scheduler.py). Uncapped, 1,000 hanging
targets held all 256 slots for four rounds of their 10 s timeout while no other check ran (132.8 s at
100,000); capped at half the slots, the others ended at 45-64 s and the hanging ones ~20 s later, eight
rounds of 128. The cap wanted ends both groups at once: the slow group's rounds against the others'
slot-seconds spread over the slots left to them."""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Sequence

BASE_SLOTS = 256  # the slots a run uses at least (see run_slots)
OTHERS_SHARE = 4  # the checks not expected slow keep at least 1/4 of the slots while any wait (slow_slots)
UNKNOWN_S = 0.25  # a check never seen is planned as a typical API answer; the first cycle learns the real ones
DESCRIPTOR_SLACK = 64  # listening sockets, log files, the event loop's own, pipes to its threads
TICKS = 1  # durations are planned in whole seconds (rounded up): near-equal ones end together, in one round


def run_slots(slots: int, expected_s: float, within_s: float, floor: int = BASE_SLOTS) -> int:
    """The slots a run uses of the `slots` it may: as many as end its checks' `expected_s` (their seconds,
    summed) within `within_s` (the check timeout: no run ends before its slowest check, so more slots only
    add), never fewer than `floor` nor more than `slots` less a 32nd kept for checks run now meanwhile (a
    "test connection" during a 100,000 cycle must not wait for it: 16 of 512).

    Slots are not free: checks started together answer together, and one turn of the event loop takes every
    answer that came meanwhile. At 10,000 integrations 512 slots made turns of 73 ms against 24 ms at 256; at
    100,000 the 1,000 hanging checks' 10,000 slot-seconds alone need 512 to end within a minute."""
    if slots <= 0 or within_s <= 0 or expected_s < 0:
        raise ValueError("slots and within_s must be > 0, expected_s >= 0")
    most = max(1, slots - max(1, slots // 32)) if slots > 1 else 1
    return max(min(floor, most), min(most, math.ceil(expected_s / within_s)))


def slow_makespan(seconds: Sequence[float], slots: int) -> float:
    """When the last of these checks ends, started longest first on `slots` slots, each as one frees (the
    runner's order): 1,000 checks of 10 s end at 40 s on 250 slots, at 50 s on 249 (a fifth round)."""
    if slots <= 0:
        raise ValueError("slots must be > 0")
    return _makespan(_groups(seconds), slots)


def _groups(seconds: Sequence[float]) -> list[tuple[int, int]]:
    """(duration in ticks, how many), longest first."""
    return sorted(Counter(math.ceil(max(0.0, s) * TICKS) for s in seconds).items(), reverse=True)


def _makespan(groups: Sequence[tuple[int, int]], slots: int) -> float:
    """slow_makespan of `_groups`: slots that free at the same tick are one entry with a count, so 1,000
    equal timeouts cost a few steps, not 1,000."""
    free: Counter[int] = Counter({0: slots})  # tick -> slots that become free then
    ticks = [0]
    for duration, count in groups:
        while count:
            at = ticks[0]
            take = min(count, free[at])
            free[at] -= take
            if not free[at]:
                del free[at]
                heapq.heappop(ticks)
            if (end := at + duration) not in free:
                heapq.heappush(ticks, end)
            free[end] += take
            count -= take
    return max(free) / TICKS


def slow_slots(slots: int, slow_s: Sequence[float], rest_s: float) -> int:
    """The slots (> 0) the checks expected slow (`slow_s`: each one's expected seconds) may hold at once while
    other checks are left, when those others' expected seconds sum to `rest_s`: the fewest that end the two
    groups soonest, the slow group's makespan against `rest_s` spread over the slots left. With no other
    checks, every slot; never all of them while there are others (those would wait for a whole round).

    The slow group's end falls as the cap grows and the others' rises, so the best cap is where they cross
    (a binary search); of the caps with the same makespan the fewest, which leave the others the most (the
    rounds are whole: 300 slots end 1,000 timeouts of 10 s no sooner than 250).

    The others always keep a quarter of the slots (OTHERS_SHARE): a tenant whose checks answer healthy after
    9.9 s is planned accurately every cycle, and without it 3,000 of them took 500 of 512 slots and the other
    7,000 checks (other tenants') ended after 35 s instead of 2. Once the others are all started, the runner
    gives their slots to the slow ones anyway, so the cycle ends about as soon."""
    if slots <= 0:
        raise ValueError("slots must be > 0")
    if rest_s < 0:
        raise ValueError("rest_s must be >= 0 seconds")
    if not slow_s or rest_s == 0 or slots == 1:
        return slots

    groups = _groups(slow_s)

    def rest_end(cap: int) -> float:
        return rest_s / (slots - cap)

    cross = _smallest(1, slots - 1, lambda cap: _makespan(groups, cap) <= rest_end(cap))
    best = min((cap for cap in (cross - 1, cross) if cap >= 1),
               key=lambda cap: (max(_makespan(groups, cap), rest_end(cap)), cap))
    target = _makespan(groups, best)
    cap = _smallest(1, best, lambda cap: _makespan(groups, cap) <= target)
    return min(cap, max(1, slots - max(1, slots // OTHERS_SHARE)))


def _smallest(low: int, high: int, holds) -> int:
    """The smallest n in low..high for which `holds` (false below it, true from it on); high if none."""
    while low < high:
        mid = (low + high) // 2
        if holds(mid):
            high = mid
        else:
            low = mid + 1
    return low


def descriptors_needed(*, checks: int, webhooks: int, served: int, database: int) -> int:
    """File descriptors a process may hold at once: each check's socket and as many kept alive for the next
    (`checks`: EXPORTER_MAX_CONCURRENCY), the webhook deliveries', the connections served and the database
    pools'. 512 checks alone pass the 1,024 soft limit many systems start a process with."""
    return 2 * checks + 2 * webhooks + served + database + DESCRIPTOR_SLACK
