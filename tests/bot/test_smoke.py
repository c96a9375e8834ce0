"""The shortest real path: /imagine on the fake Discord to a finished grid with buttons."""

from __future__ import annotations

from tests.bot.conftest import BotStarter


async def test_imagine_end_to_end(start_bot: BotStarter) -> None:
    env = await start_bot()
    record = await env.fake.slash(
        "alice", "general", "imagine", {"prompt": "a lighthouse --ar 1:1 --n 2 --steps 2"}
    )
    await record.wait_response()
    final = await record.wait_message(lambda m: "sdbot:reroll:1:0" in m.custom_ids, timeout=30)
    assert final.custom_ids[:4] == [
        "sdbot:upscale:1:0",
        "sdbot:upscale:1:1",
        "sdbot:vary:1:0",
        "sdbot:vary:1:1",
    ]
    assert final.attachments and final.attachments[0].data[:4] == b"\x89PNG"
    assert final.embeds[0]["description"] == "a lighthouse"
