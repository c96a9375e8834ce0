"""Every slash command through the real client: options, flags, attachments, pages, queue."""

from __future__ import annotations

import re

from storage import JobState, NewJob
from tests.bot.conftest import SMALL, BotEnv, BotStarter, job_id_of
from tests.conftest import Faults, image_png
from tests.support.fake_discord import FakeMessage, InteractionRecord


async def reply(record: InteractionRecord) -> FakeMessage:
    """The interaction's answer once it is no longer "thinking"."""
    await record.wait_response()
    return await record.wait_message(lambda m: not m.loading)


async def ephemeral_text(record: InteractionRecord) -> str:
    message = await reply(record)
    assert message.ephemeral, f"expected an ephemeral reply, got {message.content!r}"
    return message.content


def fields(message: FakeMessage) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message.embeds[0].get("fields", [])}


async def run_job(env: BotEnv, user: str, prompt: str, **options: object) -> FakeMessage:
    record = await env.imagine(user, prompt, **options)
    return await env.result(job_id_of(await reply(record)))


# /imagine


async def test_imagine_options_and_inline_flags(start_bot: BotStarter) -> None:
    env = await start_bot()
    final = await run_job(
        env,
        "alice",
        "a castle --size 64x64 --cfg 5.5 --no fog",
        negative="rain",
        count=2,
        seed=42,
        steps=2,
    )
    values = fields(final)
    assert final.embeds[0]["description"] == "a castle"
    assert values["Negative"] == "rain, fog"  # --no adds to the negative option
    assert values["Seeds"] == "42, 43"
    assert values["Steps"] == "2" and values["Guidance"] == "5.5"
    assert values["Size"] == "64×64"

    wide = await run_job(env, "alice", "a beach", aspect="16:9", count=1, steps=2)
    width, height = (int(n) for n in fields(wide)["Size"].split("×"))
    assert width > height and abs(width / height - 16 / 9) < 0.2


async def test_imagine_with_an_image_is_image_to_image(start_bot: BotStarter) -> None:
    env = await start_bot()
    upload = env.fake.upload(image_png(64, 64), "photo.png")
    record = await env.imagine("alice", "make it blue --steps 2 --n 1", image=upload, strength=0.5)
    final = await env.result(job_id_of(await reply(record)))
    assert final.embeds[0]["title"].startswith("Image to image")
    assert fields(final)["Size"] == "64×64"
    job = await env.storage.jobs.get(job_id_of(final))
    assert job.has_init_image and job.request["strength"] == 0.5
    assert job.request["kind"] == "img2img"


async def test_an_attachment_that_is_not_an_image_is_refused(start_bot: BotStarter) -> None:
    env = await start_bot()
    upload = env.fake.upload(b"just some notes", "notes.txt", "text/plain")
    record = await env.imagine("alice", f"a cat {SMALL}", image=upload)
    text = await ephemeral_text(record)
    assert "must be an image" in text and "text/plain" in text
    broken = env.fake.upload(b"\x89PNG but not really", "broken.png", "image/png")
    text = await ephemeral_text(await env.imagine("alice", f"a cat {SMALL}", image=broken))
    assert "the attachment is not" in text  # not a readable image
    assert await env.job_count() == 0


# /history


async def test_history_pages_belong_to_their_owner(start_bot: BotStarter) -> None:
    env = await start_bot()
    alice = env.fake.user("alice")
    await run_job(env, "alice", f"the real one {SMALL}")
    for n in range(6):
        request = {"prompt": f"old prompt {n}"}
        await env.storage.jobs.create(
            NewJob(user_id=alice.id, guild_id=env.fake.guild.id, channel_id=1, request=request)
        )
    record = await env.fake.slash("alice", "general", "history")
    page = await reply(record)
    assert page.ephemeral
    assert page.embeds[0]["footer"]["text"] == "page 1 of 2 · 7 jobs"
    assert len(page.embeds[0]["fields"]) == 5
    assert "old prompt 5" in page.embeds[0]["fields"][0]["value"]  # newest first
    older = f"sdbot:hist:{alice.id}:2"
    assert page.custom_ids == [older]

    stranger = await env.fake.click("bob", page, older)
    assert "someone else's history" in await ephemeral_text(stranger)
    assert page.embeds[0]["footer"]["text"].startswith("page 1 of 2")

    turned = await env.fake.click("alice", page, older)
    await turned.wait_response()
    assert turned.response_type == 7  # the same message, edited
    assert page.embeds[0]["footer"]["text"] == "page 2 of 2 · 7 jobs"
    assert "the real one" in page.embeds[0]["fields"][-1]["value"]
    assert page.custom_ids == [f"sdbot:hist:{alice.id}:1"]

    beyond = await reply(await env.fake.slash("alice", "general", "history", {"page": 9}))
    assert beyond.embeds[0]["footer"]["text"] == "page 2 of 2 · 7 jobs", "the last page"
    assert len(beyond.embeds[0]["fields"]) == 2


# /show


async def test_show_reposts_a_job_with_working_buttons(start_bot: BotStarter) -> None:
    env = await start_bot()
    original = await run_job(env, "alice", f"a red door {SMALL}")
    job_id = job_id_of(original)
    shown = await reply(await env.fake.slash("bob", "art", "show", {"job": job_id}))
    assert not shown.ephemeral
    assert shown.embeds[0]["description"] == "a red door"
    assert shown.attachments and shown.attachments[0].data[:4] == b"\x89PNG"
    assert f"sdbot:upscale:{job_id}:0" in shown.custom_ids

    click = await env.fake.click("bob", shown, f"sdbot:upscale:{job_id}:0")
    upscaled = await env.result(job_id_of(await reply(click)))
    assert upscaled.attachments[0].image_size() == (128, 128)

    missing = await env.fake.slash("alice", "general", "show", {"job": 9999})
    assert "9999" in await ephemeral_text(missing)


# /queue and /cancel


async def test_queue_shows_position_and_eta(start_bot: BotStarter, faults: Faults) -> None:
    env = await start_bot()
    await run_job(env, "bob", f"measure the step time {SMALL}")
    gate = faults.gate()
    faults.on_batch = lambda jobs: gate.hold()
    running = await reply(await env.imagine("bob", f"running {SMALL}"))
    await gate.entered.wait()
    waiting = await reply(await env.imagine("alice", f"waiting {SMALL}"))

    text = await ephemeral_text(await env.fake.slash("alice", "general", "queue"))
    assert f"running: #{job_id_of(running)}" in text
    assert "waiting: 1 job(s)" in text
    assert re.search(rf"your #{job_id_of(waiting)}: position 1, starts in about \d+s", text)

    bob_view = await ephemeral_text(await env.fake.slash("bob", "general", "queue"))
    assert f"your #{job_id_of(running)} is running now" in bob_view
    assert f"#{job_id_of(waiting)}:" not in bob_view
    gate.release()


async def test_cancel_waiting_and_running_jobs(start_bot: BotStarter, faults: Faults) -> None:
    env = await start_bot(images_per_hour=100)
    gate = faults.gate()
    faults.on_batch = lambda jobs: gate.hold()
    running = await reply(await env.imagine("alice", f"running {SMALL}"))
    await gate.entered.wait()
    waiting = await reply(await env.imagine("alice", f"waiting {SMALL}"))
    running_id, waiting_id = job_id_of(running), job_id_of(waiting)

    refused = await env.fake.slash("bob", "general", "cancel", {"job": waiting_id})
    assert "not yours" in await ephemeral_text(refused)

    done = await env.fake.slash("alice", "general", "cancel", {"job": waiting_id})
    assert await ephemeral_text(done) == f"🛑 job #{waiting_id} cancelled"
    await env.fake.wait_until(lambda: "cancelled" in waiting.content)
    assert (await env.storage.jobs.get(waiting_id)).state is JobState.CANCELLED

    latest = await env.fake.slash("alice", "general", "cancel")  # no job: the latest active one
    assert await ephemeral_text(latest) == f"🛑 job #{running_id} cancelled"
    gate.release()
    await env.fake.wait_until(lambda: "cancelled" in running.content)
    assert (await env.storage.jobs.get(running_id)).state is JobState.CANCELLED
    assert not running.embeds and not running.attachments

    quota = await env.storage.limits.usage(env.fake.user("alice").id, env.fake.guild.id)
    assert quota.hour_used == 0, "cancelled jobs give their images back"
    nothing = await env.fake.slash("alice", "general", "cancel")
    assert "no waiting or running jobs" in await ephemeral_text(nothing)


# /settings and /stats


async def test_settings_save_show_apply_and_reset(start_bot: BotStarter) -> None:
    env = await start_bot()
    saved = await env.fake.slash(
        "alice", "general", "settings", {"steps": 3, "count": 1, "negative": "blurry"}
    )
    text = await ephemeral_text(saved)
    assert text.startswith("Saved.") and "**steps**: 3" in text and "**count**: 1" in text

    shown = await ephemeral_text(await env.fake.slash("alice", "general", "settings"))
    assert shown.startswith("Your defaults:") and "**negative_prompt**: blurry" in shown

    final = await run_job(env, "alice", "a dog --size 64x64", steps=2)
    values = fields(final)
    assert values["Steps"] == "2", "an explicit option beats the saved default"
    assert values["Negative"] == "blurry" and values["Seeds"].isdigit()  # count 1 from defaults

    unknown = await env.fake.slash("alice", "general", "settings", {"model": "sdxl"})
    assert "model must be one of tiny; got 'sdxl'" in await ephemeral_text(unknown)
    too_many = await env.fake.slash("alice", "general", "settings", {"steps": 500})
    assert "steps must be between 1 and 60, got 500" in await ephemeral_text(too_many)

    reset = await env.fake.slash("alice", "general", "settings", {"reset": True})
    assert await ephemeral_text(reset) == "Your defaults are cleared."
    after = await ephemeral_text(await env.fake.slash("alice", "general", "settings"))
    assert "No saved defaults" in after


async def test_stats_shows_usage_and_what_is_left(start_bot: BotStarter) -> None:
    env = await start_bot(images_per_hour=10, images_per_day=50)
    before = await ephemeral_text(await env.fake.slash("alice", "general", "stats"))
    assert "Jobs so far: **0**" in before and "0 of 10 (10 left)" in before
    await run_job(env, "alice", "two cats --size 64x64 --steps 2 --n 2")
    after = await ephemeral_text(await env.fake.slash("alice", "general", "stats"))
    assert "Jobs so far: **1**" in after
    assert "Images this hour: 2 of 10 (8 left)" in after
    assert "Images today: 2 of 50 (48 left)" in after
    assert re.search(r"Next image frees <t:\d+:R>", after)


# Autocomplete


async def test_autocomplete_model_and_aspect(start_bot: BotStarter) -> None:
    env = await start_bot()
    models = await env.fake.autocomplete("alice", "general", "imagine", {"model": "ti"}, "model")
    await models.wait_response()
    assert [c["value"] for c in models.choices or []] == ["tiny"]
    aspects = await env.fake.autocomplete("alice", "general", "imagine", {"aspect": "16"}, "aspect")
    await aspects.wait_response()
    assert [c["value"] for c in aspects.choices or []] == ["16:9"]
    every = await env.fake.autocomplete("alice", "general", "imagine", {"aspect": ""}, "aspect")
    await every.wait_response()
    assert 1 < len(every.choices or []) <= 25
    saved = await env.fake.autocomplete("alice", "general", "settings", {"model": ""}, "model")
    await saved.wait_response()
    assert [c["value"] for c in saved.choices or []] == ["tiny"]
