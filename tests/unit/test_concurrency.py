"""Slot arithmetic: the slow checks' cap planned so that they and the other checks end together."""

from __future__ import annotations

import pytest

from exporter.cli import raise_descriptor_limit
from exporter.core import concurrency
from exporter.core.concurrency import descriptors_needed, slow_makespan, slow_slots

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
    assert slow_slots(8, [10.0] * 100, 0.001) == 6, "a quarter stays for the others, however little they need"
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


def test_the_descriptors_a_service_needs_pass_the_common_soft_limit_at_the_default_concurrency() -> None:
    needed = descriptors_needed(checks=512, webhooks=16, served=256, database=13)
    assert needed == 2 * 512 + 2 * 16 + 256 + 13 + 64
    assert needed > 1024, "512 checks and their kept-alive sockets alone pass a 1,024 soft limit"


class Limits:
    """A stand-in for the `resource` module: a soft and a hard limit on open files, and what was set."""

    RLIMIT_NOFILE, RLIM_INFINITY = 7, -1

    def __init__(self, soft: int, hard: int) -> None:
        self.soft, self.hard = soft, hard
        self.set: list[tuple[int, int]] = []

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == self.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        self.set.append(limits)


def test_the_soft_open_files_limit_is_raised_to_what_the_service_needs_within_the_hard_one(caplog) -> None:
    roomy = Limits(1024, 1_048_576)
    assert raise_descriptor_limit(1500, roomy) == 1500 and roomy.set == [(1500, 1_048_576)]
    enough = Limits(4096, 4096)
    assert raise_descriptor_limit(1500, enough) == 4096 and enough.set == [], "never lowered"
    unbounded = Limits(1024, Limits.RLIM_INFINITY)
    assert raise_descriptor_limit(1500, unbounded) == 1500 and unbounded.set == [(1500, Limits.RLIM_INFINITY)]
    tight = Limits(1024, 1200)
    with caplog.at_level("WARNING"):
        assert raise_descriptor_limit(1500, tight) == 1200 and tight.set == [(1200, 1200)]
    assert "EXPORTER_MAX_CONCURRENCY" in caplog.text and "1500" in caplog.text


def test_a_run_uses_the_slots_that_end_it_within_the_timeout_between_the_base_and_the_maximum() -> None:
    # 100,000: 1,000 timeouts of 10 s and 99,000 answers of 0.06 s = 15,940 slot-seconds -> 1,594 wanted
    assert concurrency.run_slots(512, 1_000 * 10 + 99_000 * 0.06, 10) == 496, "16 of 512 kept for run-now checks"
    # 10,000: 100 timeouts and 9,900 answers = 1,594 slot-seconds -> 160 wanted, the base 256 used
    assert concurrency.run_slots(512, 100 * 10 + 9_900 * 0.06, 10) == 256
    assert concurrency.run_slots(512, 3_000, 10) == 300
    assert concurrency.run_slots(64, 0, 10) == 62, "never more than the maximum less a 32nd, even the base"
    assert concurrency.run_slots(1, 5, 10) == 1
    for bad in ((0, 1, 10), (512, -1, 10), (512, 1, 0)):
        with pytest.raises(ValueError):
            concurrency.run_slots(*bad)


def test_the_others_keep_a_quarter_of_the_slots_against_slow_but_healthy_checks() -> None:
    """A hostile tenant's 3,000 checks answering healthy after 9.9 s, planned accurately every cycle, beside
    7,000 other checks of 0.06 s: without the quarter they took 500 of 512 slots (the others ended at 35 s)."""
    assert slow_slots(512, [9.9] * 3_000, 7_000 * 0.06) == 384
    assert slow_slots(496, [10.0] * 1_000, 99_000 * 0.06) == 334  # three rounds, as at 512
    assert slow_makespan([10.0] * 1_000, 334) == 30.0
    assert slow_slots(8, [10.0] * 6, 20.5) == 6, "the quarter is what a good plan leaves anyway"
