"""/imagine from the click to the finished grid: acknowledgement, progress, final message."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from generation.jobs import Job
from generation.prompt import truncation_warning
from storage import JobState
from tests.bot.conftest import SMALL, BotEnv, BotStarter, job_id_of
from tests.conftest import Faults
from tests.support.fake_discord import FakeMessage, InteractionRecord

CALLBACK_DEADLINE = 3.0


def acknowledged_in_time(record: InteractionRecord) -> None:
    assert record.responded_at is not None, "the interaction was never answered"
    assert record.responded_at - record.dispatched_at < CALLBACK_DEADLINE
    assert not record.errors, record.errors


def rows(message: FakeMessage) -> list[list[str]]:
    """Button labels, row by row."""
    return [[c.get("label", "") for c in row["components"]] for row in message.components]


def embed_fields(message: FakeMessage) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message.embeds[0].get("fields", [])}


def slow_steps(faults: Faults, job_id: int, seconds: float) -> None:
    """Make each denoising step of `job_id` take `seconds` longer (the GPU thread sleeps)."""

    def on_step(step: int, latents: Any, jobs: list[Job]) -> None:
        if any(job.id == str(job_id) for job in jobs):
            time.sleep(seconds)

    faults.on_step = on_step


async def finished(env: BotEnv, record: InteractionRecord) -> FakeMessage:
    progress = await record.wait_message()
    return await env.result(job_id_of(progress))


async def test_imagine_progress_then_result(start_bot: BotStarter, faults: Faults) -> None:
    env = await start_bot(progress_interval=0.5)
    # A first job measures the step time, so queued jobs get an ETA.
    first = await env.imagine("bob", f"warm up {SMALL}")
    await finished(env, first)

    gate = faults.gate()
    faults.on_batch = lambda jobs: gate.hold() if len(faults.batches) == 2 else None
    held = await env.imagine("bob", f"held {SMALL}")
    await gate.entered.wait()
    record = await env.imagine("alice", "a lighthouse --size 64x64 --steps 8 --n 1 --no fog")
    await record.wait_response()
    acknowledged_in_time(record)
    assert not record.ephemeral and not record.deferred
    progress = await record.wait_message()
    job_id = job_id_of(progress)
    assert "queued: position 1" in progress.content and "starts in about" in progress.content
    assert progress.custom_ids == [f"sdbot:cancel:{job_id}:0"]

    slow_steps(faults, job_id, 0.25)
    gate.release()
    final = await env.result(job_id)
    await env.result(job_id_of(await held.wait_message()))

    assert final is progress, "the result replaces the progress message"
    assert not record.followups
    bars = [v for v in final.versions if "step " in v.content]
    assert len(bars) >= 3, [v.content for v in final.versions]
    assert bars[-1].content.count("█") > bars[0].content.count("█")
    assert all(v.components and "cancel" in str(v.components) for v in bars)
    progress_times = [v.at for v in final.versions if not v.embeds]
    edits = progress_times[1:]  # the first version is the message's creation
    gaps = [b - a for a, b in itertools.pairwise(edits)]
    assert gaps and min(gaps) >= 0.5 - 0.1, gaps  # one edit per progress_interval at most

    fields = embed_fields(final)
    assert final.embeds[0]["description"] == "a lighthouse"
    assert fields["Negative"] == "fog"
    assert fields["Steps"] == "8" and fields["Guidance"] == "7" and fields["Model"] == "tiny"
    assert fields["Seeds"].isdigit()
    assert fields["Time"].endswith("s")
    assert f"<@{env.fake.user('alice').id}>" in final.content
    (attachment,) = final.attachments
    assert attachment.data[:4] == b"\x89PNG"
    assert attachment.image_size() == (64, 64)
    assert attachment.size <= record.payload["attachment_size_limit"]


@pytest.mark.parametrize("count", [1, 4])
async def test_result_buttons_fit_discords_limits(start_bot: BotStarter, count: int) -> None:
    env = await start_bot()
    record = await env.imagine("alice", f"a cat --size 64x64 --steps 2 --n {count}")
    final = await finished(env, record)
    job = job_id_of(final)
    numbers = [str(i + 1) for i in range(count)]
    assert rows(final) == [
        [f"U{n}" for n in numbers],
        [f"V{n}" for n in numbers],
        ["🔄 Reroll", "✏️ Remix", "🗑️ Delete", "⭐ Share"],
    ]
    assert len(final.components) <= 5 and all(len(r) <= 5 for r in rows(final))
    assert final.custom_ids[:count] == [f"sdbot:upscale:{job}:{i}" for i in range(count)]
    assert all(len(cid) <= 100 for cid in final.custom_ids)
    assert len(embed_fields(final)["Seeds"].split(", ")) == count
    width, height = final.attachments[0].image_size() or (0, 0)
    assert (width, height) == (64, 64) if count == 1 else width == height >= 128  # a 2x2 grid


async def test_grid_over_the_attachment_limit_becomes_a_smaller_jpeg(
    start_bot: BotStarter,
) -> None:
    env = await start_bot()
    limit = 6000
    env.fake.attachment_size_limit = limit
    record = await env.imagine("alice", "noise --size 64x64 --steps 2 --n 4")
    final = await finished(env, record)
    (attachment,) = final.attachments
    assert attachment.data[:3] == b"\xff\xd8\xff", "a JPEG"
    assert attachment.filename.endswith(".jpg")
    assert attachment.size <= limit
    assert record.payload["attachment_size_limit"] == limit


async def test_a_long_prompt_gets_a_private_truncation_warning(
    start_bot: BotStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await start_bot()
    used: list[object] = []

    def spy(tokenizer: Any, prompt: str) -> str | None:
        used.append(tokenizer)
        return truncation_warning(tokenizer, prompt)

    monkeypatch.setattr("bot.launch.truncation_warning", spy)
    words = " ".join(f"word{n}" for n in range(60))
    record = await env.imagine("alice", f"{words} {SMALL}")
    warning = await record.wait_followup()
    assert warning.ephemeral and warning.content.startswith("⚠️ prompt is")
    assert "ignores" in warning.content
    await env.result(job_id_of(await record.wait_message()))
    # A tokenizer call resets its padding and truncation: the GPU thread's must not be
    # used from the event loop while it encodes a batch.
    pipeline_tokenizer = env.worker.runner.model.tokenizer  # type: ignore[union-attr]
    assert used and all(t is not pipeline_tokenizer for t in used)


async def test_a_model_that_is_not_loaded_yet_still_starts(
    start_bot: BotStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await start_bot()
    # The tokenizer is known only for the resident model; another one loads with its job.
    monkeypatch.setattr(env.worker, "tokenizer", lambda model: None)
    record = await env.imagine("alice", f"a fox {SMALL}")
    final = await finished(env, record)
    assert final.attachments
    assert not record.followups, [m.content for m in record.followups]


async def test_a_slow_accept_defers_then_shows_progress(
    start_bot: BotStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await start_bot()
    monkeypatch.setattr("bot.launch.ACK_WITHIN", 0.0)  # as if the database were slow
    record = await env.imagine("alice", f"a slow start {SMALL}")
    await record.wait_response()
    acknowledged_in_time(record)
    assert record.deferred and not record.ephemeral
    progress = await record.wait_message(lambda m: not m.loading)
    assert "queued" in progress.content or "step" in progress.content
    final = await env.result(job_id_of(progress))
    assert final is progress and final.attachments


async def test_a_failed_job_says_why_and_gives_the_images_back(
    start_bot: BotStarter, faults: Faults
) -> None:
    env = await start_bot()

    def broken_gpu(jobs: list[Job]) -> None:
        raise RuntimeError("device-side assert triggered")

    faults.on_batch = broken_gpu
    record = await env.imagine("alice", "a broken vase --size 64x64 --steps 2 --n 2")
    progress = await record.wait_message()
    job_id = job_id_of(progress)
    await env.fake.wait_until(lambda: "failed" in progress.content, timeout=30)
    # The user sees the kind of failure and a reference; the details stay in the log.
    assert "the pipeline failed (RuntimeError)" in progress.content
    assert "reference" in progress.content and "device-side" not in progress.content
    assert progress.custom_ids == [] and not progress.attachments
    await env.bot.delivery.wait_idle()
    row = await env.storage.jobs.get(job_id)
    assert row.state is JobState.FAILED and row.error and "RuntimeError" in row.error
    quota = await env.storage.limits.usage(env.fake.user("alice").id, env.fake.guild.id)
    assert quota.hour_used == 0


async def test_a_waiting_job_is_not_edited_when_nothing_changed(
    start_bot: BotStarter, faults: Faults
) -> None:
    env = await start_bot(progress_interval=0.1)
    gate = faults.gate()
    faults.on_batch = lambda jobs: gate.hold()
    await progress_of(env, "bob", f"holding the GPU {SMALL}")
    await gate.entered.wait()
    waiting = await progress_of(env, "alice", f"waiting {SMALL}")
    for n in range(4):  # each new job republishes every queue position, unchanged here
        await progress_of(env, "mod", f"behind {n} {SMALL}")
    await asyncio.sleep(0.5)  # room for edits that must not come
    assert [v.content for v in waiting.versions] == [waiting.content], "edited for nothing"
    gate.release()


async def progress_of(env: BotEnv, user: str, prompt: str) -> FakeMessage:
    record = await env.imagine(user, prompt)
    await record.wait_response()
    return await record.wait_message()
