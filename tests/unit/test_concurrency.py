"""Slot arithmetic: the slow checks' cap planned so that they and the other checks end together."""

from __future__ import annotations

import pytest

from exporter.core.concurrency import slow_makespan, slow_slots

HANGING = [10.0] * 1_000  # 1 % of 100,000 hanging: each holds its slot for the 10 s timeout
REST_S = 99_000 * 0.06  # the other 99,000 answer in ~60 ms (slot-seconds in all)


def end(slots: int, cap: int, slow_s: list[float], rest_s: float) -> float:
    """When the later of the two groups ends, the slow ones on `cap` slots, the others on the rest."""
    return max(slow_makespan(slow_s, cap), rest_s / (slots - cap))


def test_whole_rounds_decide_when_equal_slow_checks_end() -> None:
    assert slow_makespan(HANGING, 250) == 40.0
    assert slow_makespan(HANGING, 249) == 50.0, "a fifth round for the last four"
    assert slow_makespan([3.0, 2.0, 2.0, 1.0], 2) == 4.0, "longest first, each on the slot freed first"
    assert slow_makespan([], 4) == 0.0


@pytest.mark.parametrize("slots", [256, 512, 1024])
def test_the_planned_cap_ends_both_groups_together_and_no_cap_ends_them_sooner(slots: int) -> None:
    cap = slow_slots(slots, HANGING, REST_S)
    planned = end(slots, cap, HANGING, REST_S)
    assert planned == min(end(slots, c, HANGING, REST_S) for c in range(1, slots)), "the soonest end of any cap"
    assert abs(slow_makespan(HANGING, cap) - REST_S / (slots - cap)) <= 10.0, "within one round of each other"
    assert slow_makespan(HANGING, cap - 1) > slow_makespan(HANGING, cap), "the fewest slots for those rounds"
    assert planned <= end(slots, slots // 2, HANGING, REST_S)


def test_at_512_slots_the_hanging_checks_take_three_rounds_and_leave_the_others_enough() -> None:
    cap = slow_slots(512, HANGING, REST_S)
    assert cap == 334 and slow_makespan(HANGING, cap) == 30.0
    assert REST_S / (512 - cap) <= 35.0
    assert slow_makespan(HANGING, 256) == 40.0, "half the slots: a fourth round, the hanging ones the tail"
    assert slow_slots(256, HANGING, REST_S) == 167 and slow_makespan(HANGING, 128) == 80.0, "256: 6 rounds, not 8"


def test_slow_checks_never_hold_every_slot_while_others_are_left() -> None:
    assert slow_slots(8, [10.0] * 100, 0.001) == 7, "one slot stays for the others, however little they need"
    assert slow_slots(8, [10.0] * 100, 1e9) == 1, "never none: the slow ones still start (> 0)"
    assert slow_slots(1, [10.0], 5.0) == 1


def test_with_no_others_or_no_slow_ones_every_slot_may_be_taken() -> None:
    assert slow_slots(256, HANGING, 0.0) == 256
    assert slow_slots(256, [], REST_S) == 256


def test_mixed_slow_durations_are_planned_longest_first() -> None:
    slow_s = [10.0] * 30 + [3.0] * 60 + [1.5] * 100
    cap = slow_slots(64, slow_s, 500.0)
    assert end(64, cap, slow_s, 500.0) == min(end(64, c, slow_s, 500.0) for c in range(1, 64))


@pytest.mark.parametrize(("slots", "rest_s"), [(0, 1.0), (4, -1.0)])
def test_impossible_inputs_are_refused(slots: int, rest_s: float) -> None:
    with pytest.raises(ValueError):
        slow_slots(slots, [10.0], rest_s)
    with pytest.raises(ValueError):
        slow_makespan([1.0], 0)
