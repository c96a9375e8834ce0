"""FairQueue: round-robin across users, bounds, positions, removal, batching, drain, and
the bounded preference for the resident model."""

from __future__ import annotations

import random

import pytest

from generation.errors import QueueFull
from generation.jobs import Job
from generation.queue import FairQueue
from tests.conftest import make_job


def ids(jobs: list[Job] | FairQueue) -> list[str]:
    return [job.id for job in jobs]


def fill(queue: FairQueue, user: str, count: int, **changes: object) -> list[Job]:
    """Push `count` jobs of `user` named user1, user2, ...; return them."""
    jobs = [make_job(f"{user}{i}", user, **changes) for i in range(1, count + 1)]
    for job in jobs:
        queue.push(job)
    return jobs


def test_a_late_user_waits_behind_one_job_not_the_whole_backlog() -> None:
    queue = FairQueue(max_size=100, max_per_user=10)
    fill(queue, "a", 10)

    position = queue.push(make_job("b1", "b"))

    assert position == 2
    assert queue.position("b1") == 2
    assert ids(queue)[:4] == ["a1", "b1", "a2", "a3"]


def test_users_take_turns_and_a_user_who_ran_goes_to_the_back() -> None:
    queue = FairQueue(max_size=100, max_per_user=10, max_images=1)  # pure turn order
    fill(queue, "a", 3)
    fill(queue, "b", 2)
    fill(queue, "c", 1)

    order = []
    while len(queue):
        order += ids(queue.pop_batch())

    assert order == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_iteration_order_is_the_order_jobs_will_run() -> None:
    queue = FairQueue(max_size=100, max_per_user=10, max_images=1)
    fill(queue, "a", 3)
    fill(queue, "b", 2)

    predicted = ids(queue)
    ran = []
    while len(queue):
        ran += ids(queue.pop_batch())

    assert ran == predicted


def test_per_user_bound_names_the_limit_and_changes_nothing() -> None:
    queue = FairQueue(max_size=100, max_per_user=3)
    fill(queue, "a", 3)

    with pytest.raises(QueueFull) as caught:
        queue.push(make_job("a4", "a"))

    assert caught.value.per_user
    assert "the limit is 3 per member" in str(caught.value)
    assert len(queue) == 3 and "a4" not in queue
    assert queue.push(make_job("b1", "b")) == 2  # other members are not affected


def test_total_bound_names_the_limit_and_changes_nothing() -> None:
    queue = FairQueue(max_size=4, max_per_user=3)
    fill(queue, "a", 2)
    fill(queue, "b", 2)

    with pytest.raises(QueueFull) as caught:
        queue.push(make_job("c1", "c"))

    assert not caught.value.per_user
    assert "4 of 4" in str(caught.value)
    assert len(queue) == 4 and "c1" not in queue


def test_remove_takes_a_waiting_job_out_and_positions_close_up() -> None:
    queue = FairQueue(max_size=100, max_per_user=10)
    fill(queue, "a", 2)
    fill(queue, "b", 2)
    assert ids(queue) == ["a1", "b1", "a2", "b2"]

    removed = queue.remove("b1")

    assert removed is not None and removed.id == "b1"
    assert queue.remove("b1") is None
    assert queue.remove("nope") is None
    assert len(queue) == 3
    assert ids(queue) == ["a1", "b2", "a2"]
    assert [queue.position(i) for i in ("a1", "b2", "a2")] == [1, 2, 3]
    assert queue.position("b1") is None


def test_a_user_whose_only_job_was_removed_loses_their_place() -> None:
    queue = FairQueue(max_size=100, max_per_user=10)
    fill(queue, "a", 1)
    fill(queue, "b", 1)
    queue.remove("a1")

    queue.push(make_job("a2", "a"))

    assert ids(queue) == ["b1", "a2"]


def test_pop_batch_takes_only_compatible_jobs_in_turn_order() -> None:
    queue = FairQueue(max_size=100, max_per_user=10)
    queue.push(make_job("a1", "a"))
    queue.push(make_job("b1", "b", width=128))  # other size: another batch
    queue.push(make_job("c1", "c", seed=7, prompt="a different prompt"))  # same shape: batches
    queue.push(make_job("d1", "d", steps=3))  # other step count: another batch
    queue.push(make_job("a2", "a"))

    batch = queue.pop_batch()

    assert ids(batch) == ["a1", "c1", "a2"]
    assert ids(queue) == ["b1", "d1"]
    assert ids(queue.pop_batch()) == ["b1"]
    assert ids(queue.pop_batch()) == ["d1"]
    assert queue.pop_batch() == []


def test_pop_batch_fills_up_to_max_images_and_skips_what_does_not_fit() -> None:
    queue = FairQueue(max_size=100, max_per_user=10, max_images=5)
    queue.push(make_job("a1", "a", count=2))
    queue.push(make_job("b1", "b", count=4))  # 2 + 4 > 5: stays
    queue.push(make_job("c1", "c", count=3))  # 2 + 3 = 5: joins
    queue.push(make_job("d1", "d", count=1))  # 6 > 5: stays

    batch = queue.pop_batch()

    assert ids(batch) == ["a1", "c1"]
    assert sum(job.request.count for job in batch) == 5
    assert ids(queue) == ["b1", "d1"]


def test_a_job_larger_than_max_images_still_runs_alone() -> None:
    queue = FairQueue(max_size=100, max_per_user=10, max_images=2)
    queue.push(make_job("a1", "a", count=4))
    queue.push(make_job("b1", "b", count=1))

    assert ids(queue.pop_batch()) == ["a1"]
    assert ids(queue.pop_batch()) == ["b1"]


def test_drain_empties_the_queue_in_fair_order() -> None:
    queue = FairQueue(max_size=100, max_per_user=10)
    fill(queue, "a", 2)
    fill(queue, "b", 1)

    drained = queue.drain()

    assert ids(drained) == ["a1", "b1", "a2"]
    assert len(queue) == 0 and list(queue) == []
    assert queue.pop_batch() == []
    assert queue.push(make_job("c1", "c")) == 1


# Model switches: jobs for the resident model may go first, a bounded number of times


def models(batches: list[list[Job]]) -> list[str]:
    """The model of each batch, in order."""
    return [batch[0].request.model for batch in batches]


def pop_all(queue: FairQueue) -> list[list[Job]]:
    batches = []
    while len(queue):
        batches.append(queue.pop_batch())
    return batches


def switches(start: str | None, batch_models: list[str]) -> int:
    """How many model loads running batches of `batch_models` in order takes."""
    loads, resident = 0, start
    for model in batch_models:
        loads += model != resident
        resident = model
    return loads


def head(queue: FairQueue) -> Job:
    """The job strict turns would run next (with no resident model, the order is strict)."""
    resident, queue.resident = queue.resident, None
    first = next(iter(queue))
    queue.resident = resident
    return first


def test_a_job_for_the_resident_model_goes_before_one_that_needs_a_switch() -> None:
    queue = FairQueue(max_size=100, max_per_user=10)
    queue.resident = "sd15"
    queue.push(make_job("a1", "a", model="xl"))
    queue.push(make_job("b1", "b", model="sd15", width=128))  # another batch key, same model
    queue.push(make_job("c1", "c", model="sd15", width=128))

    assert ids(queue) == ["b1", "c1", "a1"]
    assert ids(queue.pop_batch()) == ["b1", "c1"]  # led by b1, filled as usual
    assert queue.resident == "sd15"
    assert ids(queue.pop_batch()) == ["a1"]
    assert queue.resident == "xl"  # the model loaded for the batch just handed out


def test_a_passed_over_job_runs_after_at_most_max_skips_batches() -> None:
    queue = FairQueue(max_size=100, max_per_user=10, max_images=1, max_skips=2)
    queue.resident = "sd15"
    queue.push(make_job("a1", "a", model="xl"))
    fill(queue, "b", 5, model="sd15")

    batches = pop_all(queue)

    # a1 is passed over twice, then runs; sd15 jobs wait their turn behind it after.
    assert [ids(batch) for batch in batches] == [["b1"], ["b2"], ["a1"], ["b3"], ["b4"], ["b5"]]


def test_alternating_models_load_far_less_often_than_with_strict_turns() -> None:
    def alternating(max_skips: int) -> FairQueue:
        queue = FairQueue(max_size=100, max_per_user=10, max_images=1, max_skips=max_skips)
        queue.resident = "sd15"
        for n in range(1, 7):
            queue.push(make_job(f"a{n}", "a", model="sd15"))
            queue.push(make_job(f"b{n}", "b", model="xl"))
        return queue

    strict = pop_all(alternating(max_skips=0))
    sparing = pop_all(alternating(max_skips=3))

    assert [ids(batch) for batch in strict] == [[f"{u}{n}"] for n in range(1, 7) for u in "ab"]
    assert switches("sd15", models(strict)) == 11
    assert [ids(batch) for batch in sparing] == [
        [job_id]
        for job_id in (
            *("a1", "a2", "a3", "a4"),  # b1 is next in turn from the second batch on ...
            *("b1", "b2", "b3", "b4"),  # ... and runs after three skips; now a5 waits
            *("a5", "a6"),
            *("b5", "b6"),  # b5 is passed over once, by a6: nothing else for sd15 waits
        )
    ]
    assert switches("sd15", models(sparing)) == 3


def test_with_no_resident_model_or_max_skips_0_the_order_is_strict_turns() -> None:
    for resident, max_skips in ((None, 3), ("sd15", 0)):
        queue = FairQueue(max_size=100, max_per_user=10, max_images=1, max_skips=max_skips)
        queue.resident = resident
        queue.push(make_job("a1", "a", model="xl"))
        queue.push(make_job("b1", "b", model="sd15"))

        assert ids(queue) == ["a1", "b1"]
        assert [ids(batch) for batch in pop_all(queue)] == [["a1"], ["b1"]]


def test_positions_follow_the_model_preference() -> None:
    queue = FairQueue(max_size=100, max_per_user=10)
    queue.resident = "sd15"

    assert queue.push(make_job("a1", "a", model="xl")) == 1
    assert queue.push(make_job("b1", "b", model="sd15")) == 1
    assert [queue.position(i) for i in ("a1", "b1")] == [2, 1]

    queue.resident = "xl"  # the worker learned that xl is loaded after all
    assert ids(queue) == ["a1", "b1"]


def test_a_cancelled_job_takes_its_skips_with_it() -> None:
    queue = FairQueue(max_size=100, max_per_user=10, max_images=1, max_skips=1)
    queue.resident = "sd15"
    fill(queue, "a", 2, model="xl")
    fill(queue, "b", 4, model="sd15")
    assert ids(queue.pop_batch()) == ["b1"]  # a1's one skip

    assert queue.remove("a1") is not None

    # a2 is next in turn now and gets a skip of its own.
    assert ids(queue) == ["b2", "a2", "b3", "b4"]
    assert [ids(batch) for batch in pop_all(queue)] == [["b2"], ["a2"], ["b3"], ["b4"]]


def test_drain_returns_jobs_in_the_order_they_would_have_run() -> None:
    queue = FairQueue(max_size=100, max_per_user=10, max_images=1)
    queue.resident = "sd15"
    queue.push(make_job("a1", "a", model="xl"))
    fill(queue, "b", 2, model="sd15")

    assert ids(queue.drain()) == ["b1", "b2", "a1"]
    assert len(queue) == 0 and list(queue) == []


@pytest.mark.parametrize("seed", range(40))
def test_order_predictions_hold_and_no_job_is_passed_over_more_than_max_skips(seed: int) -> None:
    rng = random.Random(seed)
    max_skips = rng.randint(0, 3)
    queue = FairQueue(
        max_size=100, max_per_user=10, max_images=rng.randint(1, 8), max_skips=max_skips
    )
    queue.resident = rng.choice([None, "m1", "m2", "m3"])
    pushed = []
    for n in range(rng.randint(1, 30)):
        job = make_job(
            f"j{n}",
            rng.choice("abcde"),
            model=rng.choice(["m1", "m2", "m3"]),
            count=rng.randint(1, 4),
            steps=rng.choice([2, 3]),
        )
        queue.push(job)
        pushed.append(job.id)
    predicted = ids(queue)

    ran: list[str] = []
    passed_over: dict[str, int] = {}
    waited: dict[str, int] = {}  # batches run since a job was first next in turn
    while len(queue):
        next_in_turn = head(queue).id
        waited.setdefault(next_in_turn, 0)
        assert ids(queue) == predicted[len(ran) :]  # positions stay right as batches go
        batch = ids(queue.pop_batch())
        if next_in_turn not in batch:
            passed_over[next_in_turn] = passed_over.get(next_in_turn, 0) + 1
        ran += batch
        for job_id in waited:
            if job_id not in ran:
                waited[job_id] += 1

    assert ran == predicted
    assert sorted(ran) == sorted(pushed)
    assert all(times <= max_skips for times in passed_over.values()), passed_over
    assert all(batches <= max_skips for batches in waited.values()), waited


def test_a_job_passed_over_for_its_own_users_younger_job_stays_next_in_turn() -> None:
    # a1 is next in turn; the only job for the resident model is a's own a2. Running a2
    # first is a skip of a1, not a's turn: a1 must not go behind every other member.
    queue = FairQueue(max_size=100, max_per_user=10, max_images=1, max_skips=1)
    queue.resident = "sd15"
    queue.push(make_job("a1", "a", model="xl"))
    queue.push(make_job("a2", "a", model="sd15"))
    for user in "bcd":
        queue.push(make_job(f"{user}1", user, model="xl"))

    predicted = ids(queue)
    batches = [ids(batch) for batch in pop_all(queue)]

    assert batches == [["a2"], ["a1"], ["b1"], ["c1"], ["d1"]]
    assert predicted == [job_id for [job_id] in batches]
