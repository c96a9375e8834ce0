"""A result that was never posted while the bot runs (an outage that outlasted the
retries) is posted by the periodic sweep, once."""

from __future__ import annotations

import asyncio

from storage import NewJob
from tests.bot.conftest import BotStarter
from tests.conftest import image_png, make_request


async def test_the_sweep_posts_an_undelivered_result_once(start_bot: BotStarter) -> None:
    env = await start_bot(redelivery_interval=0.2)
    alice, general = env.fake.user("alice"), env.fake.channel("general")
    request = make_request(width=64, height=64)
    job = await env.storage.jobs.create(
        NewJob(
            user_id=alice.id,
            guild_id=env.fake.guild.id,
            channel_id=general.id,
            request=request.to_dict(),
        )
    )
    await env.storage.jobs.mark_running(job.id)
    await env.storage.images.save(job.id, 0, image_png(64, 64), seed=42, width=64, height=64)
    await env.storage.jobs.mark_done(job.id, [42])

    result = await env.result(job.id)
    assert result.attachments and f"<@{alice.id}>" in result.content
    await asyncio.sleep(0.6)  # a few more sweeps: none may post it again
    marker = f"sdbot:reroll:{job.id}:0"
    assert [m.id for m in env.fake.messages(general) if marker in m.custom_ids] == [result.id]
    assert (await env.storage.jobs.get(job.id)).delivered
