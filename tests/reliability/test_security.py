"""Security: the token stays out of logs, only admins configure, members own their jobs,
and SQL in a prompt is only text. (Pickled weights: `test_process`.)"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest
import torch

from generation.jobs import Job
from tests.reliability.conftest import StartBot
from tests.reliability.support import (
    TABLES,
    assert_no_secret,
    job_id,
    jobs,
    result_messages,
    row_counts,
    wait_delivered,
)

SMALL = "--size 64x64 --n 1 --steps 2"


async def test_token_never_appears_in_logs_of_a_run_with_failures(
    start_bot: StartBot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env = await start_bot()

    def explode(batch: list[Job]) -> None:
        if any("explode" in job.request.prompt for job in batch):
            raise RuntimeError("injected failure with a traceback")

    env.faults.on_batch = explode
    env.fake.fail_next("PATCH /webhooks/", 500)
    env.fake.fail_next("PATCH /webhooks/", 429, retry_after=0.05)
    ok = await env.fake.slash("alice", "general", "imagine", {"prompt": f"a moth {SMALL}"})
    await ok.wait_response()
    bad = await env.fake.slash("bob", "general", "imagine", {"prompt": "x --steps 0"})
    await bad.wait_response()
    boom = await env.fake.slash("mod", "general", "imagine", {"prompt": f"explode {SMALL}"})
    await boom.wait_response()
    await env.fake.disconnect_gateway()
    await env.fake.wait_until(lambda: env.fake.resume_count >= 1, 20, "a RESUME")
    await wait_delivered(env.fake, [job_id(ok)], timeout=60)
    await env.fake.wait_until(
        lambda: "failed" in (boom.message.content if boom.message else ""), 30, "the failure"
    )
    text = caplog.text + "\n".join(str(r.exc_info) + str(r.args) for r in caplog.records)
    assert "injected failure" in text  # the failure was logged, with its traceback
    assert_no_secret(text, env.fake.token, "the logs")
    with sqlite3.connect(env.db_path) as conn:
        dump = "\n".join(conn.iterdump())
    assert_no_secret(dump, env.fake.token, "the database")


async def test_config_refused_without_manage_server(start_bot: StartBot) -> None:
    env = await start_bot()
    before = row_counts(env.db_path)
    # The fake, like a server whose admin opened /config to everyone, lets alice run it.
    for name, options in (
        ("config limits", {"images_per_hour": 1}),
        ("config banned-words", {"add": "cat"}),
        ("config show", {}),
    ):
        record = await env.fake.slash("alice", "general", name, options)
        await record.wait_response()
        assert record.ephemeral and "needs the Manage Server permission" in record.content
    assert row_counts(env.db_path) == before
    record = await env.fake.slash("admin", "general", "config limits", {"images_per_hour": 5})
    await record.wait_response()
    assert "Limits updated" in record.content  # an admin can


async def test_nobody_can_cancel_or_delete_another_members_job(start_bot: StartBot) -> None:
    env = await start_bot()
    gate = env.faults.gate()

    def hold_first_step(step: int, latents: torch.Tensor, batch: list[Job]) -> None:
        if step == 0:
            gate.hold()

    env.faults.on_step = hold_first_step
    record = await env.fake.slash("bob", "general", "imagine", {"prompt": f"bob's owl {SMALL}"})
    await record.wait_response()
    running = job_id(record)
    await gate.entered.wait()
    assert record.message is not None
    attempts = [
        await env.fake.slash("alice", "general", "cancel", {"job": running}),
        await env.fake.click("alice", record.message, f"sdbot:cancel:{running}:0"),
    ]
    for attempt in attempts:
        await attempt.wait_response()
        assert attempt.ephemeral and f"job #{running} is not yours" in attempt.content
    gate.release()
    await wait_delivered(env.fake, [running], timeout=60)
    assert jobs(env.db_path)[running]["state"] == "done"
    [result] = result_messages(env.fake, running)
    attempt = await env.fake.click("alice", result, f"sdbot:delete:{running}:0")
    await attempt.wait_response()
    assert attempt.ephemeral and "can delete this" in attempt.content
    assert not result.deleted
    # The owner's own cancel and a moderator's delete still work.
    mine = await env.fake.slash("bob", "general", "imagine", {"prompt": f"bob's fox {SMALL}"})
    await mine.wait_response()
    own = await env.fake.slash("bob", "general", "cancel", {"job": job_id(mine)})
    await own.wait_response()
    assert "cancelled" in own.content
    moderator = await env.fake.click("mod", result, f"sdbot:delete:{running}:0")
    await moderator.wait_response()
    await env.fake.wait_until(lambda: result.deleted, 10, "the moderator's delete")


async def test_sql_metacharacters_in_a_prompt_are_only_text(start_bot: StartBot) -> None:
    env = await start_bot()
    prompt = 'Robert\'); DROP TABLE jobs;-- "x" OR 1=1 %_ \\ ; SELECT * FROM rate_usage'
    record = await env.fake.slash(
        "alice", "general", "imagine", {"prompt": f"{prompt} {SMALL}", "negative": "'; --"}
    )
    await record.wait_response()
    job = job_id(record)
    await wait_delivered(env.fake, [job], timeout=60)
    row = jobs(env.db_path)[job]
    assert f'"prompt":{_json(prompt)}' in row["request_json"]
    assert set(row_counts(env.db_path)) == set(TABLES)  # every table is still there
    history = await env.fake.slash("alice", "general", "history", {})
    await history.wait_response()
    assert "DROP TABLE jobs" in str(history.embeds)


def _json(text: str) -> str:
    import json

    return json.dumps(text, separators=(",", ":"))


async def test_a_cancelled_running_job_stays_cancelled_across_a_stop(start_bot: StartBot) -> None:
    """Once the member reads "cancelled", storage says so too: a stop (or crash) before the
    GPU thread reaches its next step must not run the job again after the restart."""
    env = await start_bot()
    gate = env.faults.gate()

    def hold_first_step(step: int, latents: torch.Tensor, batch: list[Job]) -> None:
        if step == 0:
            gate.hold()

    env.faults.on_step = hold_first_step
    record = await env.fake.slash("bob", "general", "imagine", {"prompt": f"bob's cat {SMALL}"})
    await record.wait_response()
    job = job_id(record)
    await gate.entered.wait()
    reply = await env.fake.slash("bob", "general", "cancel", {"job": job})
    await reply.wait_response()
    assert "cancelled" in reply.content
    assert jobs(env.db_path)[job]["state"] == "cancelled"
    # The bot stops before the GPU thread reaches its next step (and sees the cancel).
    stopping = asyncio.create_task(env.worker.stop(grace=10))
    await asyncio.sleep(0)
    gate.release()
    unfinished = await stopping
    assert [j.id for j in unfinished] == [str(job)]
    assert await env.storage.jobs.requeue(int(j.id) for j in unfinished) == 0
    assert [r.id for r in await env.storage.jobs.unfinished()] == []
    await env.bot.delivery.wait_idle()
    assert record.message is not None and "cancelled" in record.message.content
