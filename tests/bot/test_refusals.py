"""Refusals say which rule and which value, privately, and record nothing; the one error
handler turns a bug into a reference the admin can find in the log."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest

from tests.bot.conftest import SMALL, BotEnv, BotStarter, job_id_of
from tests.bot.test_commands import ephemeral_text, reply
from tests.conftest import Faults, image_png
from tests.support.fake_discord import InteractionRecord


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


async def private_after_defer(env: BotEnv, record: InteractionRecord) -> str:
    """The refusal that followed a public defer: the "thinking" message (which the whole
    channel saw) is taken down without ever showing it, and the refusal is a new message only
    the member sees."""
    await record.wait_response()
    assert record.deferred and not record.ephemeral, "the defer was public"
    answer = await record.wait_followup()
    thinking = record.message
    assert thinking is not None and thinking.deleted and not thinking.edits
    assert answer is not thinking and answer.ephemeral, answer.content
    public = [m.content for m in env.fake.messages("general") if not m.ephemeral]
    assert answer.content not in public
    assert not record.errors, record.errors
    return answer.content


async def test_refusals_after_a_public_defer_stay_private(
    start_bot: BotStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await start_bot(images_per_hour=1)
    monkeypatch.setattr("bot.launch.ACK_WITHIN", 0.0)  # accepting "takes" longer than 2 s
    await reply(await env.fake.slash("admin", "general", "config banned-words", {"add": "ogre"}))

    banned = await private_after_defer(env, await env.imagine("alice", f"an ogre {SMALL}"))
    assert "'ogre'" in banned and "bans" in banned
    greedy = await private_after_defer(env, await env.imagine("alice", "two cats --n 2 --steps 2"))
    assert "1 images per hour" in greedy and "asks for 2" in greedy
    # A slow upload defers before validation: its refusal goes through the one error handler.
    upload = env.fake.upload(image_png(64, 64), "photo.png")
    invalid = await private_after_defer(
        env, await env.imagine("alice", "a cat", image=upload, steps=500)
    )
    assert "steps must be between 1 and 60, got 500" in invalid
    # If Discord will not delete it, the "thinking" message gets a line that names nothing.
    env.fake.fail_next("DELETE /webhooks/", status=403, code=50013)
    kept = await env.imagine("alice", f"an ogre again {SMALL}")
    answer = await kept.wait_followup()
    assert answer.ephemeral and "'ogre'" in answer.content
    assert kept.message is not None and not kept.message.deleted
    assert kept.message.content == "This request was not started."
    assert await env.job_count() == 0
    quota = await env.storage.limits.usage(env.fake.user("alice").id, env.fake.guild.id)
    assert quota.hour_used == 0

    accepted = await env.imagine("alice", f"a cat {SMALL}")  # the defer still becomes progress
    progress = await reply(accepted)
    assert not progress.deleted and not progress.ephemeral and job_id_of(progress) == 1


async def test_errors_after_a_defer_still_get_a_reference(
    start_bot: BotStarter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env = await start_bot()
    monkeypatch.setattr("bot.launch.ACK_WITHIN", 0.0)

    async def broken(*args: object) -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("accept broke")

    monkeypatch.setattr(env.bot.service, "accept", broken)
    with caplog.at_level(logging.ERROR, logger="bot.errors"):
        failed = await private_after_defer(env, await env.imagine("alice", f"a troll {SMALL}"))
    reference = re.search(r"reference `([0-9a-f]{8})`", failed)
    assert reference is not None, failed
    assert "accept broke" not in failed
    (logged,) = [r for r in caplog.records if reference[1] in r.getMessage()]
    assert logged.exc_info is not None and logged.exc_info[0] is RuntimeError
    assert "/imagine" in logged.getMessage()


def hold_accepting(env: BotEnv, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Accepting a job waits (past the public defer) until the returned event is set, then
    runs as usual."""
    go = asyncio.Event()
    accept = env.bot.service.accept

    async def held(*args: Any, **kwargs: Any) -> Any:
        await go.wait()
        return await accept(*args, **kwargs)

    monkeypatch.setattr(env.bot.service, "accept", held)
    return go


async def test_a_refusal_reaches_the_member_when_a_moderator_deleted_the_thinking(
    start_bot: BotStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await start_bot()
    monkeypatch.setattr("bot.launch.ACK_WITHIN", 0.0)
    await reply(await env.fake.slash("admin", "general", "config banned-words", {"add": "ogre"}))
    go = hold_accepting(env, monkeypatch)
    record = await env.imagine("alice", f"an ogre {SMALL}")
    await record.wait_response()
    thinking = record.message
    assert record.deferred and thinking is not None and thinking.loading
    await env.fake.delete_message(thinking)  # `@original` is 404 10008 from now on
    go.set()

    answer = await record.wait_followup()
    assert answer is not thinking and answer.ephemeral and "'ogre'" in answer.content
    assert [(e.method, e.code) for e in record.errors] == [("GET", 10008)]
    assert await env.job_count() == 0


async def test_a_refusal_reaches_the_member_when_discord_will_not_take_the_thinking_down(
    start_bot: BotStarter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Withdrawing "thinking" is best effort: when Discord refuses to show it, or to delete
    or edit it, the refusal is still sent, and it takes the "thinking" message's place (Discord
    ignores the ephemeral flag then), which beats leaving the member with "thinking…"."""
    env = await start_bot()
    monkeypatch.setattr("bot.launch.ACK_WITHIN", 0.0)
    await reply(await env.fake.slash("admin", "general", "config banned-words", {"add": "ogre"}))

    unseen = env.fake.fail_next("GET /webhooks/.*/messages/@original", status=429, via=False)
    with caplog.at_level(logging.WARNING, logger="bot.errors"):
        looked = await env.imagine("alice", f"an ogre {SMALL}")
        answer = await looked.wait_followup()
    assert unseen.hits and "'ogre'" in answer.content
    assert answer is looked.message and not answer.loading
    assert any("could not take down the thinking message" in r.getMessage() for r in caplog.records)

    caplog.clear()
    undeleted = env.fake.fail_next("DELETE /webhooks/", status=403, code=50013)
    unedited = env.fake.fail_next("PATCH /webhooks/.*/messages/@original", status=429, via=False)
    with caplog.at_level(logging.WARNING, logger="bot.errors"):
        kept = await env.imagine("alice", f"an ogre again {SMALL}")
        answer = await kept.wait_followup()
    assert undeleted.hits and unedited.hits and "'ogre'" in answer.content
    assert answer is kept.message and not answer.loading
    logged = [r.getMessage() for r in caplog.records]
    assert any("could not delete the thinking message" in m for m in logged), logged
    assert any("could not take down the thinking message" in m for m in logged), logged
    assert await env.job_count() == 0
