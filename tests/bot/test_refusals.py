"""Refusals say which rule and which value, privately, and record nothing; the one error
handler turns a bug into a reference the admin can find in the log."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from tests.bot.conftest import SMALL, BotEnv, BotStarter, job_id_of
from tests.bot.test_commands import ephemeral_text, reply
from tests.conftest import Faults


async def refused(env: BotEnv, user: str, prompt: str, **options: object) -> str:
    before = await env.job_count()
    text = await ephemeral_text(await env.imagine(user, prompt, **options))
    assert await env.job_count() == before, f"a refusal recorded a job: {text!r}"
    return text


@pytest.mark.parametrize(
    ("prompt", "options", "expected"),
    [
        ("a cat --size 64x64", {"steps": 500}, "steps must be between 1 and 60, got 500"),
        (
            f"a cat {SMALL} --cfg nan",
            {},
            "guidance must be a finite number between 0 and 30, got nan",
        ),
        ("a cat --steps 2 --size 64x63", {}, "height must be a multiple of 8"),
        ("a cat --ar 16:9", {"count": 2, "seed": 1, "model": "sdxl"}, "got 'sdxl'"),
        ("a cat --bogus 3", {}, "unknown flag --bogus"),
        ("--steps 2", {}, "prompt is empty"),
    ],
)
async def test_invalid_requests_name_the_rule_and_the_value(
    start_bot: BotStarter, prompt: str, options: dict[str, object], expected: str
) -> None:
    env = await start_bot()
    assert expected in await refused(env, "alice", prompt, **options)
    assert not env.fake.interactions[-1].errors


async def test_rate_limit_refusal_says_when_in_discord_time(start_bot: BotStarter) -> None:
    env = await start_bot(images_per_hour=1)
    progress = await reply(await env.imagine("alice", f"the only one {SMALL}"))
    await env.result(job_id_of(progress))
    text = await refused(env, "alice", f"one more {SMALL}")
    found = re.search(r"the next frees <t:(\d+):R>", text)
    assert found is not None, text
    assert "1 images per hour" in text
    expected = env.bot.delivery.clock() + 3600
    assert abs(int(found[1]) - expected) < 60


async def test_queue_full_refusals(start_bot: BotStarter, faults: Faults) -> None:
    env = await start_bot(queue_size=2, max_per_user=1)
    gate = faults.gate()
    faults.on_batch = lambda jobs: gate.hold()
    await reply(await env.imagine("alice", f"running {SMALL}"))
    await gate.entered.wait()
    await reply(await env.imagine("alice", f"waiting {SMALL}"))

    mine = await refused(env, "alice", f"a third {SMALL}")
    assert "you already have 1 jobs waiting; the limit is 1 per member" in mine
    await reply(await env.imagine("bob", f"bob's {SMALL}"))
    full = await refused(env, "mod", f"too late {SMALL}")
    assert "the queue is full (2 of 2 jobs)" in full
    gate.release()


async def test_an_unexpected_error_gets_a_reference_that_is_in_the_log(
    start_bot: BotStarter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env = await start_bot()

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the history page broke")

    monkeypatch.setattr("bot.commands.history_page", broken)
    with caplog.at_level(logging.ERROR, logger="bot.errors"):
        text = await ephemeral_text(await env.fake.slash("alice", "general", "history"))
    found = re.search(r"something went wrong .*reference `([0-9a-f]{8})`", text)
    assert found is not None, text
    assert "the history page broke" not in text, "no internals in the reply"
    (logged,) = [r for r in caplog.records if found[1] in r.getMessage()]
    assert logged.exc_info is not None and logged.exc_info[0] is RuntimeError
    assert "/history" in logged.getMessage()


async def test_an_unexpected_error_in_a_button_gets_a_reference(
    start_bot: BotStarter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env = await start_bot()
    progress = await reply(await env.imagine("alice", f"a bell {SMALL}"))
    result = await env.result(job_id_of(progress))

    async def broken(*args: object) -> None:
        raise KeyError("reroll broke")

    monkeypatch.setattr("bot.buttons.reroll", broken)
    with caplog.at_level(logging.ERROR, logger="bot.errors"):
        click = await env.fake.click("bob", result, f"sdbot:reroll:{job_id_of(result)}:0")
        text = await ephemeral_text(click)
    reference = re.search(r"reference `([0-9a-f]{8})`", text)
    assert reference is not None, text
    (logged,) = [r for r in caplog.records if reference[1] in r.getMessage()]
    assert logged.exc_info is not None and logged.exc_info[0] is KeyError
    assert "sdbot:reroll" in logged.getMessage()


async def test_errors_after_a_defer_still_name_the_rule_or_get_a_reference(
    start_bot: BotStarter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env = await start_bot()
    monkeypatch.setattr("bot.launch.ACK_WITHIN", 0.0)  # accepting "takes" longer than 2 s
    await reply(await env.fake.slash("admin", "general", "config banned-words", {"add": "ogre"}))
    record = await env.imagine("alice", f"an ogre {SMALL}")
    refusal = await reply(record)
    assert record.deferred and "'ogre'" in refusal.content
    assert await env.job_count() == 0

    async def broken(*args: object) -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("accept broke")

    monkeypatch.setattr(env.bot.service, "accept", broken)
    with caplog.at_level(logging.ERROR, logger="bot.errors"):
        record = await env.imagine("alice", f"a troll {SMALL}")
        failed = await reply(record)
    assert record.deferred
    reference = re.search(r"reference `([0-9a-f]{8})`", failed.content)
    assert reference is not None, failed.content
    (logged,) = [r for r in caplog.records if reference[1] in r.getMessage()]
    assert logged.exc_info is not None and logged.exc_info[0] is RuntimeError
