"""What survives a restart: result buttons on old messages, and jobs left in the queue."""

from __future__ import annotations

import pytest

from storage import JobState
from tests.bot.conftest import SMALL, BotEnv, BotStarter, FakeClock, job_id_of
from tests.bot.test_commands import reply
from tests.conftest import Faults
from tests.support.fake_discord import FakeMessage


def results_of(env: BotEnv, job_id: int) -> list[FakeMessage]:
    """Every message, in any channel, that carries job `job_id`'s result buttons."""
    marker = f"sdbot:reroll:{job_id}:0"
    return [m for m in env.fake.state.messages.values() if marker in m.custom_ids]


async def test_old_result_buttons_work_after_a_restart(start_bot: BotStarter) -> None:
    before = await start_bot()
    progress = await reply(await before.imagine("alice", f"a comet {SMALL}"))
    old = await before.result(job_id_of(progress))
    await before.stop()

    after = await start_bot(fake=before.fake, data_dir=before.data_dir)
    assert after.bot is not before.bot and after.worker is not before.worker
    click = await after.fake.click("bob", old, f"sdbot:upscale:{job_id_of(old)}:0")
    upscaled_progress = await reply(click)
    assert not upscaled_progress.ephemeral, upscaled_progress.content
    upscaled = await after.result(job_id_of(upscaled_progress))
    assert upscaled.attachments[0].image_size() == (128, 128)
    job = await after.storage.jobs.get(job_id_of(upscaled))
    assert job.parent_job_id == job_id_of(old) and job.user_id == after.fake.user("bob").id


async def test_jobs_left_queued_run_once_after_a_restart(
    start_bot: BotStarter, faults: Faults
) -> None:
    before = await start_bot()
    gate = faults.gate(opener=before.worker.runner.stop_event)  # stopping opens it
    faults.on_batch = lambda jobs: gate.hold()
    records = [await before.imagine("alice", f"running {SMALL}")]
    await gate.entered.wait()
    records += [
        await before.imagine("bob", f"waiting {SMALL}"),
        await before.imagine("alice", f"waiting too {SMALL}"),
    ]
    progress = [await reply(record) for record in records]
    ids = [job_id_of(message) for message in progress]
    await before.stop()
    faults.on_batch = None
    states = [(await before_row(before, job_id)) for job_id in ids]
    assert all(state in (JobState.QUEUED, JobState.RUNNING) for state in states), states
    assert not any(results_of(before, job_id) for job_id in ids)

    after = await start_bot(fake=before.fake, data_dir=before.data_dir)
    for job_id, message in zip(ids, progress, strict=True):
        result = await after.result(job_id)
        assert result is message, "the token still works: the progress message becomes the result"
    await after.bot.delivery.wait_idle()
    batches_run = len(faults.batches)
    for job_id in ids:
        assert len(results_of(after, job_id)) == 1
        row = await after.storage.jobs.get(job_id)
        assert row.state is JobState.DONE and row.delivered

    await after.stop()
    again = await start_bot(fake=before.fake, data_dir=before.data_dir)
    await again.bot.delivery.wait_idle()
    assert len(faults.batches) == batches_run, "nothing runs twice"
    for job_id in ids:
        assert len(results_of(again, job_id)) == 1


async def before_row(env: BotEnv, job_id: int) -> JobState:
    """A job's state read straight from the SQLite file the stopped bot left behind."""
    import sqlite3

    with sqlite3.connect(env.data_dir / "sdbot.sqlite3") as db:
        (state,) = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return JobState(state)


async def test_a_result_never_posted_is_posted_once_after_a_restart(
    start_bot: BotStarter, faults: Faults, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await start_bot()
    gate = faults.gate()
    faults.on_batch = lambda jobs: gate.hold()
    progress = await reply(await before.imagine("alice", f"a lost letter {SMALL}"))
    job_id = job_id_of(progress)
    await gate.entered.wait()
    clock.advance(16 * 60)  # the token is gone: the result must go to the channel
    monkeypatch.setattr("bot.delivery.POST_RETRY_DELAYS", (0.01,))
    outage = before.fake.fail_next(r"POST /channels/\d+/messages$", 503, times=1000)
    faults.on_batch = None
    gate.release()
    await before.fake.wait_until(lambda: len(outage.hits) >= 2, timeout=30)
    await before.bot.delivery.wait_idle()
    row = await before.storage.jobs.get(job_id)
    assert row.state is JobState.DONE and not row.delivered
    await before.stop()
    before.fake.state.faults.remove(outage)

    after = await start_bot(fake=before.fake, data_dir=before.data_dir)
    result = await after.result(job_id)
    assert result is not progress and result.attachments
    await after.fake.wait_until(lambda: progress.deleted)
    assert len(results_of(after, job_id)) == 1
    assert (await after.storage.jobs.get(job_id)).delivered
    batches = len(faults.batches)
    await after.stop()
    again = await start_bot(fake=before.fake, data_dir=before.data_dir)
    await again.bot.delivery.wait_idle()
    assert len(results_of(again, job_id)) == 1 and len(faults.batches) == batches


async def test_a_remix_form_opened_before_a_restart_works_after_it(
    start_bot: BotStarter,
) -> None:
    before = await start_bot()
    progress = await reply(await before.imagine("alice", f"a snow globe {SMALL}"))
    old = await before.result(job_id_of(progress))
    opened = await before.fake.click("alice", old, f"sdbot:remix:{job_id_of(old)}:0")
    await opened.wait_response()
    await before.stop()

    after = await start_bot(fake=before.fake, data_dir=before.data_dir)
    submitted = await after.fake.submit_modal(
        "alice", opened, values={"prompt": "a snow globe at night --seed 5"}
    )
    await submitted.wait_response(timeout=3.5)
    remixed = await after.result(job_id_of(await submitted.wait_message()))
    assert remixed.embeds[0]["description"] == "a snow globe at night"
    job = await after.storage.jobs.get(job_id_of(remixed))
    assert job.parent_job_id == job_id_of(old) and job.seeds == (5,)
