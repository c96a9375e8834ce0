"""Jobs: creation, guarded state moves, delivery exactly once, recovery, history, lineage."""

from __future__ import annotations

import asyncio

import pytest

from storage import (
    Action,
    InvalidValue,
    JobNotFound,
    JobState,
    Storage,
)
from tests.storage.conftest import START, FakeClock, new_job


async def test_create_and_get_round_trip(storage: Storage) -> None:
    created = await storage.jobs.create(new_job(init_image=b"\x89PNG init", guild_id=None))
    loaded = await storage.jobs.get(created.id)
    assert loaded == created
    assert loaded.init_image == b"\x89PNG init" and loaded.has_init_image
    assert loaded.state is JobState.QUEUED and loaded.action is Action.IMAGINE
    assert loaded.guild_id is None
    assert loaded.request == {"prompt": "a red fox in snow", "count": 2, "seed": 42, "steps": 20}
    assert loaded.created_at == START
    assert loaded.interaction_expires_at == START + 15 * 60
    assert "tok" not in repr(loaded)  # the interaction token stays out of logs


async def test_get_unknown_job_names_it(storage: Storage) -> None:
    with pytest.raises(JobNotFound, match="job 999 does not exist"):
        await storage.jobs.get(999)


async def test_request_must_be_json(storage: Storage) -> None:
    with pytest.raises(InvalidValue, match="JSON-serialisable"):
        await storage.jobs.create(new_job(request={"prompt": b"bytes"}))
    with pytest.raises(InvalidValue, match="parent_index needs a parent_job_id"):
        await storage.jobs.create(new_job(parent_index=1))


async def test_missing_parent_is_job_not_found(storage: Storage) -> None:
    with pytest.raises(JobNotFound, match="job 77"):
        await storage.jobs.create(new_job(parent_job_id=77, parent_index=0, action=Action.UPSCALE))


async def test_happy_path_moves(storage: Storage, clock: FakeClock) -> None:
    job = await storage.jobs.create(new_job())
    clock.advance(5)
    assert await storage.jobs.mark_running(job.id)
    clock.advance(10)
    assert await storage.jobs.mark_done(job.id, [42, 43])
    await storage.jobs.set_progress_message(job.id, 555)
    await storage.jobs.set_result_message(job.id, 777)
    with pytest.raises(JobNotFound):
        await storage.jobs.set_progress_message(job.id + 1, 1)
    done = await storage.jobs.get(job.id)
    assert done.state is JobState.DONE
    assert (done.started_at, done.finished_at) == (START + 5, START + 15)
    assert done.seeds == (42, 43) and done.attempts == 1
    assert (done.progress_message_id, done.result_message_id) == (555, 777)


async def test_moves_are_guarded(storage: Storage) -> None:
    job = await storage.jobs.create(new_job())
    assert not await storage.jobs.mark_done(job.id, [1])  # queued -> done is not a move
    assert await storage.jobs.mark_running(job.id)
    assert not await storage.jobs.mark_running(job.id)
    assert await storage.jobs.mark_done(job.id, [1])
    assert not await storage.jobs.mark_running(job.id)  # done never runs again
    assert not await storage.jobs.mark_failed(job.id, "late")
    assert not await storage.jobs.cancel(job.id)
    assert (await storage.jobs.get(job.id)).state is JobState.DONE
    with pytest.raises(JobNotFound):
        await storage.jobs.mark_running(12345)


async def test_cancel_wins_over_a_late_start(storage: Storage) -> None:
    job = await storage.jobs.create(new_job())
    assert await storage.jobs.cancel(job.id, reason="cancelled by its owner")
    assert not await storage.jobs.mark_running(job.id)
    cancelled = await storage.jobs.get(job.id)
    assert cancelled.state is JobState.CANCELLED and cancelled.error == "cancelled by its owner"


async def test_failed_job_keeps_its_reason(storage: Storage) -> None:
    job = await storage.jobs.create(new_job())
    await storage.jobs.mark_running(job.id)
    assert await storage.jobs.mark_failed(job.id, "out of GPU memory " * 200)
    failed = await storage.jobs.get(job.id)
    assert failed.state is JobState.FAILED and failed.error is not None
    assert failed.error.startswith("out of GPU memory") and len(failed.error) == 1000


async def test_mark_delivered_once_among_racers(storage: Storage) -> None:
    job = await storage.jobs.create(new_job())
    assert not await storage.jobs.mark_delivered(job.id)  # not finished yet
    await storage.jobs.mark_running(job.id)
    await storage.jobs.mark_done(job.id, [1, 2])
    results = await asyncio.gather(
        *(storage.jobs.mark_delivered(job.id, result_message_id=900 + i) for i in range(20))
    )
    assert results.count(True) == 1
    winner = 900 + results.index(True)
    delivered = await storage.jobs.get(job.id)
    assert delivered.delivered and delivered.result_message_id == winner
    assert await storage.jobs.undelivered() == []


async def test_unfinished_requeues_in_original_order(storage: Storage) -> None:
    a = await storage.jobs.create(new_job(1))
    b = await storage.jobs.create(new_job(2))
    c = await storage.jobs.create(new_job(3))
    d = await storage.jobs.create(new_job(4))
    await storage.jobs.mark_running(b.id)
    await storage.jobs.mark_running(c.id)
    await storage.jobs.mark_done(c.id, [1])
    again = await storage.jobs.unfinished()
    assert [j.id for j in again] == [a.id, b.id, d.id]
    assert all(j.state is JobState.QUEUED and j.started_at is None for j in again)
    assert [j.id for j in await storage.jobs.undelivered()] == [c.id]


async def test_job_that_keeps_crashing_the_bot_is_failed(storage: Storage) -> None:
    job = await storage.jobs.create(new_job())
    for _ in range(2):  # crashed while running, twice: tried again
        await storage.jobs.mark_running(job.id)
        assert [j.id for j in await storage.jobs.unfinished(max_attempts=3)] == [job.id]
    await storage.jobs.mark_running(job.id)  # the third crash: given up
    assert await storage.jobs.unfinished(max_attempts=3) == []
    failed = await storage.jobs.get(job.id)
    assert failed.state is JobState.FAILED and failed.attempts == 3
    assert "3 times" in (failed.error or "")
    assert [j.id for j in await storage.jobs.undelivered([JobState.FAILED])] == [job.id]
    with pytest.raises(InvalidValue, match="finished states"):
        await storage.jobs.undelivered([JobState.QUEUED])


async def test_active_for_user(storage: Storage) -> None:
    a = await storage.jobs.create(new_job(1))
    b = await storage.jobs.create(new_job(1))
    await storage.jobs.create(new_job(2))
    await storage.jobs.mark_running(a.id)
    c = await storage.jobs.create(new_job(1))
    await storage.jobs.cancel(c.id)
    assert [j.id for j in await storage.jobs.active_for_user(1)] == [a.id, b.id]


async def test_history_is_newest_first_and_paginated(storage: Storage, clock: FakeClock) -> None:
    ids = []
    for _ in range(23):
        clock.advance(1)
        ids.append((await storage.jobs.create(new_job(1, init_image=b"big"))).id)
    await storage.jobs.create(new_job(2))
    first = await storage.jobs.history(1, page=1, per_page=10)
    assert first.total == 23 and first.pages == 3 and first.has_next
    assert [j.id for j in first.items] == ids[::-1][:10]
    assert first.items[0].has_init_image and first.items[0].init_image is None
    last = await storage.jobs.history(1, page=3, per_page=10)
    assert [j.id for j in last.items] == ids[::-1][20:] and not last.has_next
    assert (await storage.jobs.history(1, page=9)).items == ()
    assert (await storage.jobs.history(999)).total == 0
    with pytest.raises(InvalidValue, match="page must be 1 or more; got 0"):
        await storage.jobs.history(1, page=0)
    with pytest.raises(InvalidValue, match="per_page must be between 1 and 100; got 500"):
        await storage.jobs.history(1, per_page=500)


async def test_lineage_ancestors_and_children(storage: Storage) -> None:
    root = await storage.jobs.create(new_job())
    variation = await storage.jobs.create(
        new_job(parent_job_id=root.id, parent_index=1, action=Action.VARIATION)
    )
    reroll = await storage.jobs.create(new_job(parent_job_id=root.id, action=Action.REROLL))
    upscale = await storage.jobs.create(
        new_job(parent_job_id=variation.id, parent_index=3, action=Action.UPSCALE)
    )
    assert [j.id for j in await storage.jobs.ancestors(upscale.id)] == [variation.id, root.id]
    assert await storage.jobs.ancestors(root.id) == []
    assert [j.id for j in await storage.jobs.children(root.id)] == [variation.id, reroll.id]
    assert [(j.action, j.parent_index) for j in await storage.jobs.children(variation.id)] == [
        (Action.UPSCALE, 3)
    ]


async def test_drop_init_images_of_old_finished_jobs(storage: Storage, clock: FakeClock) -> None:
    old = await storage.jobs.create(new_job(init_image=b"old"))
    await storage.jobs.cancel(old.id)
    clock.advance(100)
    fresh = await storage.jobs.create(new_job(init_image=b"fresh"))
    assert await storage.jobs.drop_init_images(finished_before=START + 50) == 1
    assert (await storage.jobs.get(old.id)).init_image is None
    assert (await storage.jobs.get(fresh.id)).init_image == b"fresh"
