"""/config: who may use it, and what each server setting does to /imagine and its results."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.bot.conftest import SMALL, BotEnv, BotStarter, job_id_of
from tests.bot.test_commands import ephemeral_text, reply

if TYPE_CHECKING:
    import torch


async def config(env: BotEnv, subcommand: str, user: str = "admin", **options: object) -> str:
    record = await env.fake.slash(user, "general", f"config {subcommand}", options)
    return await ephemeral_text(record)


async def refusal(env: BotEnv, prompt: str, channel: str = "general", **options: object) -> str:
    """The ephemeral answer to an /imagine that must be refused (and leave no job row)."""
    before = await env.job_count()
    text = await ephemeral_text(await env.imagine("alice", prompt, channel, **options))
    assert await env.job_count() == before, "a refused request must not be recorded"
    return text


async def test_config_needs_manage_server(start_bot: BotStarter) -> None:
    env = await start_bot()
    manage_guild = 1 << 5  # Discord hides /config from the others; the bot checks as well
    assert int(env.fake.commands(env.fake.guild)["config"]["default_member_permissions"]) == (
        manage_guild
    )
    for sub, options in (("show", {}), ("showcase", {"channel": "showcase"})):
        text = await config(env, sub, user="alice", **options)
        assert "/config needs the Manage Server permission" in text
    assert (await env.storage.guilds.get(env.fake.guild.id)).showcase_channel_id is None
    shown = await config(env, "show", user="owner")
    assert "Showcase: none" in shown and "Allowed channels: all channels" in shown


async def test_allowed_channels_refuse_imagine_elsewhere(start_bot: BotStarter) -> None:
    env = await start_bot()
    art = env.fake.channel("art")
    text = await config(env, "channel", channel="art", allowed=True)
    assert f"Allowed channels: <#{art.id}>" in text
    refused = await refusal(env, f"a cat {SMALL}")
    assert f"allowed only in <#{art.id}>" in refused
    accepted = await reply(await env.imagine("alice", f"a cat {SMALL}", "art"))
    assert not accepted.ephemeral
    await env.result(job_id_of(accepted))
    await config(env, "channel", channel="art", allowed=False)
    assert not (await reply(await env.imagine("alice", f"again {SMALL}"))).ephemeral


async def test_banned_words_refuse_the_prompt_naming_the_word(start_bot: BotStarter) -> None:
    env = await start_bot()
    text = await config(env, "banned-words", add="Dragon, gore")
    assert "Banned words: 2" in text
    refused = await refusal(env, f"a red DRAGON at dawn {SMALL}")
    assert "'dragon'" in refused and "bans" in refused
    negative = await refusal(env, f"a knight {SMALL}", negative="no gore please")
    assert "'gore'" in negative
    assert "Banned words: 1" in await config(env, "banned-words", remove="dragon")
    assert not (await reply(await env.imagine("alice", f"a dragon {SMALL}"))).ephemeral


async def test_guild_limits_and_exempt_role(start_bot: BotStarter) -> None:
    fake = await start_bot.fake()
    artist = fake.world.add_role("Artist", 0)
    fake.world.add_user("carol", roles=[artist])
    env = await start_bot(fake=fake)

    text = await config(env, "limits", images_per_hour=1, max_steps=3)
    assert "Images per hour: 1" in text and "Max steps: 3" in text
    too_many_steps = await refusal(env, "a cat --size 64x64 --n 1 --steps 4")
    assert "steps must be between 1 and 3, got 4" in too_many_steps
    never = await refusal(env, "two cats --size 64x64 --steps 2 --n 2")
    assert "rate limit: 1 images per hour" in never and "asks for 2" in never
    first = await reply(await env.imagine("alice", f"one cat {SMALL}"))
    await env.result(job_id_of(first))
    later = await refusal(env, f"another cat {SMALL}")
    assert re.search(r"you have 0 left, the next frees <t:\d+:R>", later), later

    exempt = await config(env, "exempt-role", role=artist, exempt=True)
    assert f"Exempt roles: <@&{artist.id}>" in exempt
    for n in range(2):
        accepted = await reply(await env.imagine("carol", f"free cat {n} {SMALL}"))
        assert not accepted.ephemeral, accepted.content
        await env.result(job_id_of(accepted))
    stats = await ephemeral_text(await env.fake.slash("carol", "general", "stats"))
    assert "exempt" in stats


@pytest.mark.parametrize(
    ("policy", "channel", "shown"),
    [
        ("withhold", "general", None),
        ("spoiler", "general", "SPOILER_"),
        ("allow", "general", "sdbot-"),
        ("withhold", "nsfw-art", "SPOILER_"),  # an age-restricted channel gets a spoiler
    ],
)
async def test_nsfw_policy_decides_what_flagged_images_become(
    start_bot: BotStarter,
    monkeypatch: pytest.MonkeyPatch,
    policy: str,
    channel: str,
    shown: str | None,
) -> None:
    def everything_flagged(model: object, images: torch.Tensor) -> tuple[bool, ...]:
        return (True,) * len(images)

    monkeypatch.setattr("generation.runner._safety_flags", everything_flagged)
    env = await start_bot()
    assert f"NSFW policy: {policy}" in await config(env, "nsfw", policy=policy)
    progress = await reply(await env.imagine("alice", f"a statue {SMALL}", channel))
    final = await env.result(job_id_of(progress))
    if shown is None:
        assert not final.attachments
        assert "1 image(s) withheld" in final.content
    else:
        (attachment,) = final.attachments
        assert attachment.filename.startswith(shown)
