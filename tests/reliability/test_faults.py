"""Faults the bot must survive in-process: Discord errors, gateway drops, expired tokens,
GPU failures, a busy database, missing files. Each proves nothing accepted is lost and
the user is told what happened."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import torch

from generation.jobs import Job
from storage import NewJob, Storage
from storage.records import Action
from tests.conftest import image_png, make_request
from tests.reliability.conftest import BotEnv, StartBot
from tests.reliability.support import (
    job_id,
    jobs,
    progress_steps,
    result_messages,
    row_counts,
    wait_delivered,
    wait_recorded,
)
from tests.support.fake_discord import FakeDiscord, FakeMessage, InteractionRecord

SMALL = "--size 64x64 --n 1"


async def imagine(env: BotEnv, user: str, prompt: str, channel: str = "general") -> int:
    """`user` runs /imagine; returns the accepted job's id."""
    record = await env.fake.slash(user, channel, "imagine", {"prompt": prompt})
    await record.wait_response()
    assert not record.ephemeral, f"/imagine {prompt!r} was refused: {record.content}"
    return job_id(record)


def final(env: BotEnv, job: int) -> FakeMessage:
    [message] = result_messages(env.fake, job)
    return message


def hold_at_step(env: BotEnv, step: int) -> Any:
    """A gate the GPU thread waits at, inside the denoising loop at `step`."""
    gate = env.faults.gate()

    def on_step(at: int, latents: torch.Tensor, batch: list[Job]) -> None:
        if at == step:
            gate.hold()

    env.faults.on_step = on_step
    return gate


# -- Discord answering 429 and 5xx ---------------------------------------------------------


async def test_429_and_5xx_bursts_on_progress_and_result_edits(start_bot: StartBot) -> None:
    env = await start_bot()
    gate = hold_at_step(env, 1)
    job = await imagine(env, "alice", f"a lighthouse {SMALL} --steps 4")
    await gate.entered.wait()
    # The next edits of the progress message (webhook PATCH) meet a burst: 500, 502, 3x 429.
    faults = [
        env.fake.fail_next("PATCH /webhooks/", 500),
        env.fake.fail_next("PATCH /webhooks/", 502),
        env.fake.fail_next("PATCH /webhooks/", 429, times=3, retry_after=0.05),
    ]
    gate.release()
    await wait_delivered(env.fake, [job], timeout=60)
    message = final(env, job)
    assert all(f.times == 0 for f in faults), "not every injected error was met"
    # In order: the result is the last version; no stale progress edit came after it.
    assert "sdbot:reroll" in str(message.versions[-1].components)
    assert progress_steps(message) == sorted(progress_steps(message))
    await wait_recorded(env.db_path, [job])


async def test_5xx_and_429_on_followups(start_bot: StartBot) -> None:
    env = await start_bot()
    job = await imagine(env, "alice", f"a harbour {SMALL} --steps 2")
    await wait_delivered(env.fake, [job])
    for status in (429, 500):
        fault = env.fake.fail_next("POST /webhooks/", status)
        record = await env.fake.slash("alice", "general", "show", {"job": job})
        await record.wait_message(lambda m: not m.loading, timeout=20)
        assert fault.times == 0
        assert f"sdbot:reroll:{job}:0" in record.message.custom_ids  # type: ignore[union-attr]


async def test_expired_token_delivers_through_channel_despite_errors(start_bot: StartBot) -> None:
    env = await start_bot()
    gate = env.faults.gate()
    env.faults.on_batch = lambda batch: gate.hold()
    records = {}
    for user in ("alice", "bob", "mod"):
        record = await env.fake.slash(
            user, "general", "imagine", {"prompt": f"{user}'s comet {SMALL} --steps 2"}
        )
        await record.wait_response()
        records[job_id(record)] = record
    await gate.entered.wait()
    env.clock.advance(15 * 60 + 1)  # the interaction tokens are dead now
    post = r"POST /channels/\d+/messages$"
    faults = [
        env.fake.fail_next(post, 429, times=2, retry_after=0.05),
        env.fake.fail_next(post, 500),
        env.fake.fail_next(post, 503),  # discord.py does not retry a 503 itself
    ]
    # Progress edits now go through the bot token too; they meet these when one is due.
    env.fake.fail_next(r"PATCH /channels/\d+/messages/", 429, times=2, retry_after=0.05)
    gate.release()
    await wait_delivered(env.fake, list(records), timeout=60)
    await wait_recorded(env.db_path, list(records))
    assert all(f.times == 0 for f in faults)
    for job, record in records.items():
        message = final(env, job)
        assert message.webhook_id is None, "a result went through a dead interaction token"
        assert message.content.startswith(f"<@{record.user.id}>")
        assert jobs(env.db_path)[job]["result_message_id"] == message.id
        progress = record.message
        assert progress is not None
        await env.fake.wait_until(lambda p=progress: p.deleted, 10, "the progress message to go")
        assert not [e for e in record.errors if e.code == 50027], "the bot used a dead token"


async def test_callback_refused_after_accepting_still_delivers(start_bot: StartBot) -> None:
    """The bot accepted the job but Discord refused its answer (e.g. 10062 because the loop
    was slow): the job must still run and its result go to the channel."""
    env = await start_bot()
    env.fake.fail_next("POST /interactions/", 404, code=10062, message="Unknown interaction")
    record = await env.fake.slash(
        "alice", "general", "imagine", {"prompt": f"a quiet pond {SMALL} --steps 2"}
    )
    await env.fake.wait_until(lambda: jobs(env.db_path), 10, "the job row")
    [job] = jobs(env.db_path)
    await wait_delivered(env.fake, [job], timeout=60)
    assert final(env, job).channel_id == record.channel.id
    assert jobs(env.db_path)[job]["state"] == "done"


async def test_progress_message_deleted_mid_job_result_still_posted(start_bot: StartBot) -> None:
    env = await start_bot()
    gate = hold_at_step(env, 1)
    record = await env.fake.slash(
        "alice", "general", "imagine", {"prompt": f"a kite {SMALL} --steps 3"}
    )
    await record.wait_response()
    job = job_id(record)
    await gate.entered.wait()
    assert record.message is not None
    await env.fake.state.delete(record.message)  # a moderator removed it
    gate.release()
    await wait_delivered(env.fake, [job], timeout=60)
    assert not final(env, job).deleted
    assert jobs(env.db_path)[job]["state"] == "done"


# -- the gateway drops -----------------------------------------------------------------------


async def test_gateway_disconnect_and_resume_mid_generation(start_bot: StartBot) -> None:
    env = await start_bot()
    gate = hold_at_step(env, 1)
    first = await imagine(env, "alice", f"a glacier {SMALL} --steps 3")
    await gate.entered.wait()
    await env.fake.disconnect_gateway()
    # Sent while the bot is away: Discord replays it on RESUME, inside the 3 s deadline.
    during = await env.fake.slash("bob", "general", "imagine", {"prompt": f"a fjord {SMALL}"})
    await env.fake.wait_until(lambda: env.fake.resume_count >= 1, 20, "a RESUME")
    await during.wait_response()
    gate.release()
    await wait_delivered(env.fake, [first, job_id(during)], timeout=60)
    # A session the gateway will not resume: the bot identifies again and carries on.
    gate = hold_at_step(env, 1)
    second = await imagine(env, "bob", f"a canyon {SMALL} --steps 3")
    await gate.entered.wait()
    identified = env.fake.identify_count
    await env.fake.invalidate_session(resumable=False)
    await env.fake.wait_until(lambda: env.fake.identify_count > identified, 30, "IDENTIFY")
    gate.release()
    third = await imagine(env, "alice", f"a delta {SMALL} --steps 2")
    await wait_delivered(env.fake, [second, third], timeout=60)
    for job in (first, second, third):
        assert len(result_messages(env.fake, job)) == 1


# -- the GPU fails -------------------------------------------------------------------------


async def test_worker_exception_oom_and_nan_fail_only_their_job(start_bot: StartBot) -> None:
    env = await start_bot()
    blocker = env.faults.gate()
    calls = {"n": 0}

    def on_batch(batch: list[Job]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            blocker.hold()  # the first job holds the GPU while the others queue up
            return
        prompts = [job.request.prompt for job in batch]
        if any(p.startswith("boom") for p in prompts):
            raise ValueError("boom: injected failure")
        if any(p.startswith("oom") for p in prompts):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def on_step(step: int, latents: torch.Tensor, batch: list[Job]) -> None:
        for index, job in enumerate(batch):
            if job.request.prompt.startswith("nan"):
                latents[index].fill_(float("nan"))

    env.faults.on_batch = on_batch
    env.faults.on_step = on_step
    first = await imagine(env, "owner", f"fine first {SMALL} --steps 2")
    await blocker.entered.wait()
    ids = {
        name: await imagine(env, user, f"{name} a tree {SMALL} --steps 2")
        for name, user in (("boom", "alice"), ("oom", "bob"), ("nan", "mod"), ("fine", "admin"))
    }
    blocker.release()
    await wait_delivered(env.fake, [first, ids["fine"]], timeout=60)

    def failed_text(job: int) -> str | None:
        row = jobs(env.db_path)[job]
        if row["state"] != "failed":
            return None
        message = env.fake.message(row["progress_message_id"])
        return message.content if "failed" in message.content else None

    expected = {
        "boom": "the pipeline failed (ValueError); the admin can find it in the log",
        "oom": "out of GPU memory at 64x64 with 1 image(s)",
        "nan": "invalid (NaN) pixels",
    }
    for name, reason in expected.items():
        text = await env.fake.wait_until(lambda j=ids[name]: failed_text(j), 30, f"{name} failure")
        assert reason in text, f"{name}: {text!r}"
        assert not result_messages(env.fake, ids[name])
    states = {name: jobs(env.db_path)[job]["state"] for name, job in ids.items()}
    assert states == {"boom": "failed", "oom": "failed", "nan": "failed", "fine": "done"}
    # A failed job gives its images back to the quota.
    usage = sqlite3.connect(env.db_path).execute("SELECT job_id FROM rate_usage").fetchall()
    assert {row[0] for row in usage} == {first, ids["fine"]}


# -- the database --------------------------------------------------------------------------


def hold_write_lock(db_path: Any, seconds: float) -> threading.Thread:
    """Another process's writer: holds SQLite's write lock for `seconds`."""
    ready = threading.Event()

    def run() -> None:
        conn = sqlite3.connect(db_path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        ready.set()
        threading.Event().wait(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(5)
    return thread


async def test_database_busy_is_retried(start_bot: StartBot) -> None:
    env = await start_bot(busy_timeout=0.1)  # so the bot's own retries do the waiting
    holder = hold_write_lock(env.db_path, 0.4)
    record = await env.fake.slash(
        "alice", "general", "imagine", {"prompt": f"a barn {SMALL} --steps 2"}
    )
    await record.wait_response()
    assert not record.ephemeral, record.content
    await wait_delivered(env.fake, [job_id(record)], timeout=60)
    holder.join()


async def test_database_locked_too_long_is_a_clear_refusal(start_bot: StartBot) -> None:
    env = await start_bot(busy_timeout=0.1)
    before = row_counts(env.db_path)
    holder = hold_write_lock(env.db_path, 2.5)
    record = await env.fake.slash(
        "alice", "general", "imagine", {"prompt": f"a barn {SMALL} --steps 2"}
    )
    await record.wait_response()
    assert record.ephemeral
    assert "database is busy" in record.content, record.content
    assert "sqlite3" not in record.content, "a server path leaked to the user"
    holder.join()
    assert row_counts(env.db_path) == before


# -- files gone ----------------------------------------------------------------------------


async def test_button_whose_image_file_is_gone(start_bot: StartBot) -> None:
    env = await start_bot()
    job = await imagine(env, "alice", f"a mill {SMALL} --steps 2")
    await wait_delivered(env.fake, [job])
    message = final(env, job)
    (await env.storage.images.path(job, 0)).unlink()
    before = row_counts(env.db_path)
    replies: list[InteractionRecord] = []
    for custom_id in (f"sdbot:upscale:{job}:0", f"sdbot:vary:{job}:0"):
        replies.append(await env.fake.click("alice", message, custom_id))
    replies.append(await env.fake.slash("alice", "general", "show", {"job": job}))
    for reply in replies:
        answer = await env.fake.wait_until(lambda r=reply: _answer(r), timeout=10)
        text = answer.content
        assert answer.ephemeral, text
        assert f"image 1 of job {job} is not available" in text, text
        assert str(env.data_dir) not in text, "a server path leaked to the user"
    assert row_counts(env.db_path) == before


def _answer(reply: InteractionRecord) -> FakeMessage | None:
    """The last message an interaction answered with, once it is not "thinking". (/show
    defers publicly: its "thinking" message is deleted and a refusal follows privately.)"""
    if reply.followups:
        return reply.followups[-1]
    return reply.message if reply.message and not reply.message.loading else None


async def test_start_with_an_undeliverable_recovered_job(start_bot: StartBot) -> None:
    """A crash left two finished jobs unposted and one's image is gone since: the bot must
    still start, record why that one failed, and post the other."""
    ids: list[int] = []

    async def crash_leftovers(fake: FakeDiscord, data_dir: Path) -> None:
        storage = await Storage.open(data_dir)
        for user in ("alice", "bob"):
            new = NewJob(
                user_id=fake.user(user).id,
                guild_id=fake.guild.id,
                channel_id=fake.channel("general").id,
                request=make_request().to_dict(),
                action=Action.IMAGINE,
            )
            record = await storage.jobs.create(new)
            await storage.jobs.mark_running(record.id)
            await storage.images.save(record.id, 0, image_png(64, 64), seed=1, width=64, height=64)
            await storage.jobs.mark_done(record.id, [1])
            ids.append(record.id)
        (await storage.images.path(ids[0], 0)).unlink()
        await storage.close()

    env = await start_bot(prepare=crash_leftovers)  # recovery runs in setup_hook
    rows = jobs(env.db_path)
    assert rows[ids[0]]["state"] == "failed"
    assert "not available" in rows[ids[0]]["error"]
    assert rows[ids[1]]["delivered_at"] is not None
    assert len(result_messages(env.fake, ids[1])) == 1


async def test_disk_full_while_saving_a_result_fails_that_job_with_a_reason(
    start_bot: StartBot, monkeypatch: Any
) -> None:
    """Saving the images fails (ENOSPC): the member is told, the job is not left running,
    its images go back to the quota, and the next job (once there is room) still works."""
    import errno

    env = await start_bot()
    original = env.storage.images.save

    async def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(env.storage.images, "save", full)
    record = await env.fake.slash(
        "alice", "general", "imagine", {"prompt": f"a dune {SMALL} --steps 2"}
    )
    await record.wait_response()
    job = job_id(record)
    await env.fake.wait_until(
        lambda: record.message is not None and "failed" in record.message.content, 30, "failure"
    )
    assert record.message is not None
    assert "could not be saved" in record.message.content, record.message.content
    row = jobs(env.db_path)[job]
    assert row["state"] == "failed"
    usage = sqlite3.connect(env.db_path).execute("SELECT COUNT(*) FROM rate_usage").fetchone()
    assert usage == (0,)
    monkeypatch.setattr(env.storage.images, "save", original)
    again = await imagine(env, "alice", f"a dune {SMALL} --steps 2")
    await wait_delivered(env.fake, [again])


async def test_token_refused_early_falls_back_to_the_channel(start_bot: StartBot) -> None:
    """Discord says the interaction token expired (401 50027) while the bot's clock says it
    is fresh (a skewed clock, a token Discord revoked): that must not cost the result."""
    env = await start_bot()
    gate = env.faults.gate()
    env.faults.on_batch = lambda batch: gate.hold()
    record = await env.fake.slash(
        "alice", "general", "imagine", {"prompt": f"a reef {SMALL} --steps 2"}
    )
    await record.wait_response()
    job = job_id(record)
    await gate.entered.wait()
    env.fake.advance(15 * 60 + 1)  # Discord's clock only: the bot thinks the token is fresh
    gate.release()
    await wait_delivered(env.fake, [job], timeout=60)
    assert final(env, job).webhook_id is None
    await wait_recorded(env.db_path, [job])


async def test_two_members_remixing_the_same_job_both_get_answers(start_bot: StartBot) -> None:
    env = await start_bot()
    job = await imagine(env, "alice", f"a lantern {SMALL} --steps 2")
    await wait_delivered(env.fake, [job])
    message = final(env, job)
    opened = {}
    for user in ("alice", "bob"):
        opened[user] = await env.fake.click(user, message, f"sdbot:remix:{job}:0")
        await opened[user].wait_response()
    answers = []
    for user in ("bob", "alice"):
        submit = await env.fake.submit_modal(
            user, opened[user], values={"prompt": f"{user}'s lantern {SMALL} --steps 2"}
        )
        await submit.wait_response()
        answers.append(job_id(submit))
    await wait_delivered(env.fake, answers, timeout=60)


async def test_a_remix_form_left_open_across_a_restart_still_works(start_bot: StartBot) -> None:
    env = await start_bot()
    job = await imagine(env, "alice", f"a lantern {SMALL} --steps 2")
    await wait_delivered(env.fake, [job])
    opened = await env.fake.click("alice", final(env, job), f"sdbot:remix:{job}:0")
    await opened.wait_response()
    assert opened.modal is not None
    # The bot restarts while the form is open: a new process holds no modal objects.
    env.bot._connection._view_store._modals.clear()
    submit = await env.fake.submit_modal(
        "alice", opened, values={"prompt": f"a lamp {SMALL} --steps 2"}
    )
    await submit.wait_response()
    await wait_delivered(env.fake, [job_id(submit)], timeout=60)
