"""FairQueue: round-robin across users, bounds, positions, removal, batching, drain."""

from __future__ import annotations

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
    queue = FairQueue(max_size=100, max_per_user=10)
    fill(queue, "a", 3)
    fill(queue, "b", 2)
    fill(queue, "c", 1)

    order = []
    while len(queue):
        order += ids(queue.pop_batch(max_images=1))  # one image per batch: pure turn order

    assert order == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_iteration_order_is_the_order_jobs_will_run() -> None:
    queue = FairQueue(max_size=100, max_per_user=10)
    fill(queue, "a", 3)
    fill(queue, "b", 2)

    predicted = ids(queue)
    ran = []
    while len(queue):
        ran += ids(queue.pop_batch(max_images=1))

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

    batch = queue.pop_batch(max_images=8)

    assert ids(batch) == ["a1", "c1", "a2"]
    assert ids(queue) == ["b1", "d1"]
    assert ids(queue.pop_batch(max_images=8)) == ["b1"]
    assert ids(queue.pop_batch(max_images=8)) == ["d1"]
    assert queue.pop_batch(max_images=8) == []


def test_pop_batch_fills_up_to_max_images_and_skips_what_does_not_fit() -> None:
    queue = FairQueue(max_size=100, max_per_user=10)
    queue.push(make_job("a1", "a", count=2))
    queue.push(make_job("b1", "b", count=4))  # 2 + 4 > 5: stays
    queue.push(make_job("c1", "c", count=3))  # 2 + 3 = 5: joins
    queue.push(make_job("d1", "d", count=1))  # 6 > 5: stays

    batch = queue.pop_batch(max_images=5)

    assert ids(batch) == ["a1", "c1"]
    assert sum(job.request.count for job in batch) == 5
    assert ids(queue) == ["b1", "d1"]


def test_a_job_larger_than_max_images_still_runs_alone() -> None:
    queue = FairQueue(max_size=100, max_per_user=10)
    queue.push(make_job("a1", "a", count=4))
    queue.push(make_job("b1", "b", count=1))

    assert ids(queue.pop_batch(max_images=2)) == ["a1"]
    assert ids(queue.pop_batch(max_images=2)) == ["b1"]


def test_drain_empties_the_queue_in_fair_order() -> None:
    queue = FairQueue(max_size=100, max_per_user=10)
    fill(queue, "a", 2)
    fill(queue, "b", 1)

    drained = queue.drain()

    assert ids(drained) == ["a1", "b1", "a2"]
    assert len(queue) == 0 and list(queue) == []
    assert queue.pop_batch(max_images=8) == []
    assert queue.push(make_job("c1", "c")) == 1
