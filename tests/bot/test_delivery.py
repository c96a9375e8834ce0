"""Getting the result to the user when Discord gets in the way: an expired interaction token,
a channel the bot can no longer post in, rate limits and server errors."""

from __future__ import annotations

import pytest

from storage import JobState
from tests.bot.conftest import SMALL, BotEnv, BotStarter, FakeClock, job_id_of
from tests.bot.test_commands import reply
from tests.conftest import Faults, Gate
from tests.support.fake_discord import FakeMessage

TOKEN_EXPIRED = 16 * 60
# A 429 is retried after its short retry_after; each 5xx costs discord.py (or the bot) a
# second of back-off, so those tests inject one.


async def held_job(
    env: BotEnv, faults: Faults, channel: str = "general"
) -> tuple[FakeMessage, int, Gate]:
    """An accepted job whose batch waits in the GPU thread until `gate.release()`."""
    gate = faults.gate()
    faults.on_batch = lambda jobs: gate.hold()
    progress = await reply(await env.imagine("alice", f"a quiet moon {SMALL}", channel))
    await gate.entered.wait()
    return progress, job_id_of(progress), gate


def rejected_tokens(env: BotEnv) -> list[object]:
    return [r for r in env.fake.requests if r.error_code == 50027 or r.status == 401]


async def test_after_the_token_expires_the_result_is_a_channel_message(
    start_bot: BotStarter, faults: Faults, clock: FakeClock
) -> None:
    env = await start_bot()
    progress, job_id, gate = await held_job(env, faults)
    record = env.fake.interactions[-1]
    clock.advance(TOKEN_EXPIRED)  # the fake and the bot share this clock
    gate.release()

    result = await env.result(job_id)
    assert result is not progress
    assert result.webhook_id is None and result.author.id == env.fake.bot_user.id
    assert f"<@{env.fake.user('alice').id}>" in result.content
    assert result.attachments and result.embeds
    await env.fake.wait_until(lambda: progress.deleted)
    assert not rejected_tokens(env) and not record.errors
    expired_at = record.dispatched_at + 15 * 60
    late = [r for r in env.fake.requests if r.at > expired_at and "/webhooks/" in r.path]
    assert not late, "no webhook call after the token expired"
    await env.bot.delivery.wait_idle()
    row = await env.storage.jobs.get(job_id)
    assert row.delivered and row.result_message_id == result.id


@pytest.mark.parametrize("trouble", ["forbidden", "deleted"])
async def test_a_channel_gone_at_delivery_fails_the_job_and_tells_the_user_by_dm(
    start_bot: BotStarter, faults: Faults, clock: FakeClock, trouble: str
) -> None:
    env = await start_bot()
    art = env.fake.channel("art")
    _, job_id, gate = await held_job(env, faults, "art")
    clock.advance(TOKEN_EXPIRED)
    if trouble == "forbidden":
        await env.fake.forbid_channel("art")
    else:
        del env.fake.world.channels[art.id]
        del env.fake.guild.channels[art.id]
    gate.release()

    dms = env.fake.dm_channel("alice")
    dm = await env.fake.wait_for_message(lambda m: m.channel_id == dms.id, timeout=30)
    await env.bot.delivery.wait_idle()
    assert f"job #{job_id} finished" in dm.content and f"<#{art.id}>" in dm.content
    row = await env.storage.jobs.get(job_id)
    assert row.state is JobState.FAILED
    assert row.error is not None and f"cannot post in <#{art.id}>" in row.error
    assert not env.fake.messages(art, include_deleted=True)[1:], "nothing else posted there"


async def test_a_deleted_progress_message_does_not_lose_the_result(
    start_bot: BotStarter, faults: Faults
) -> None:
    env = await start_bot()
    progress, job_id, gate = await held_job(env, faults)
    await env.fake.state.delete(progress)  # a moderator removed it while the job waited
    gate.release()
    result = await env.result(job_id)
    assert result is not progress and result.attachments
    await env.bot.delivery.wait_idle()
    row = await env.storage.jobs.get(job_id)
    assert row.state is JobState.DONE and row.delivered


def steps_in_order(message: FakeMessage) -> None:
    """Progress versions never go backwards, and the result is the last version."""
    steps = []
    for version in message.versions:
        if "step " in version.content:
            steps.append(int(version.content.split("step ")[1].split("/")[0]))
    assert steps == sorted(steps), steps
    assert message.versions[-1].embeds, "the result is the final state"
    assert all(not v.embeds for v in message.versions[:-1])


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limits_and_server_errors_on_webhook_edits(
    start_bot: BotStarter, faults: Faults, status: int
) -> None:
    env = await start_bot()
    progress, job_id, gate = await held_job(env, faults)
    times = 2 if status == 429 else 1
    fault = env.fake.fail_next("PATCH /webhooks/", status, times=times)
    gate.release()
    result = await env.result(job_id)
    assert result is progress
    assert len(fault.hits) == times
    steps_in_order(result)
    assert len(result.attachments) == 1


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limits_and_server_errors_on_channel_posts(
    start_bot: BotStarter, faults: Faults, clock: FakeClock, status: int
) -> None:
    env = await start_bot()
    progress, job_id, gate = await held_job(env, faults)
    clock.advance(TOKEN_EXPIRED)
    times = 2 if status == 429 else 1
    fault = env.fake.fail_next(r"POST /channels/\d+/messages$", status, times=times)
    gate.release()
    result = await env.result(job_id)
    assert len(fault.hits) == times
    assert result is not progress and result.attachments
    await env.fake.wait_until(lambda: progress.deleted)
    finals = [m for m in env.fake.messages("general") if m.embeds]
    assert finals == [result], "posted exactly once"
    await env.bot.delivery.wait_idle()
    assert (await env.storage.jobs.get(job_id)).delivered


@pytest.mark.parametrize("status", [429, 500])
async def test_rate_limits_and_server_errors_on_followups(
    start_bot: BotStarter, status: int
) -> None:
    env = await start_bot()
    done = await reply(await env.imagine("alice", f"a kite {SMALL}"))
    await env.result(job_id_of(done))
    times = 2 if status == 429 else 1
    fault = env.fake.fail_next("POST /webhooks/", status, times=times)
    shown = await reply(await env.fake.slash("alice", "general", "show", {"job": job_id_of(done)}))
    assert len(fault.hits) == times
    assert shown.embeds and shown.attachments
    assert f"sdbot:upscale:{job_id_of(done)}:0" in shown.custom_ids

    missing = env.fake.fail_next("POST /webhooks/", status)
    await reply(await env.fake.slash("admin", "general", "config showcase", {"channel": "art"}))
    shared = await env.fake.click("alice", done, f"sdbot:share:{job_id_of(done)}:0")
    confirmation = await shared.wait_followup(timeout=15)
    assert missing.hits and "Shared to" in confirmation.content
    assert len(env.fake.messages("art")) == 1
