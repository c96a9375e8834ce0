"""Every result button, clicked through the real client: U, V, reroll, remix, delete, share,
and the Cancel button of the progress message."""

from __future__ import annotations

from typing import Any

from generation.request import Limits
from storage import Action, JobState
from tests.bot.conftest import SMALL, BotEnv, BotStarter, job_id_of
from tests.bot.test_commands import ephemeral_text, fields, reply
from tests.bot.test_imagine_flow import acknowledged_in_time
from tests.conftest import Faults
from tests.support.fake_discord import FakeMessage, InteractionRecord


async def finished_job(env: BotEnv, prompt: str, user: str = "alice") -> FakeMessage:
    progress = await reply(await env.imagine(user, prompt))
    return await env.result(job_id_of(progress))


async def child_result(env: BotEnv, click: InteractionRecord) -> FakeMessage:
    """The result of the job a button click started (a new message, not the clicked one)."""
    progress = await reply(click)
    assert not progress.ephemeral, progress.content
    acknowledged_in_time(click)
    assert progress is not click.source_message
    return await env.result(job_id_of(progress))


def text_inputs(modal: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    stack = list(modal.get("components") or [])
    while stack:
        component = stack.pop()
        stack += component.get("components") or []
        if isinstance(component.get("component"), dict):
            stack.append(component["component"])
        if component.get("type") == 4:
            found[component["custom_id"]] = component
    return found


async def test_upscale_doubles_the_size_and_charges_the_clicker(start_bot: BotStarter) -> None:
    env = await start_bot()
    parent = await finished_job(env, "two owls --size 64x64 --steps 2 --n 2")
    parent_id = job_id_of(parent)
    bob, alice = env.fake.user("bob").id, env.fake.user("alice").id
    guild = env.fake.guild.id

    upscaled = await child_result(
        env, await env.fake.click("bob", parent, f"sdbot:upscale:{parent_id}:1")
    )
    assert upscaled.attachments[0].image_size() == (128, 128)
    assert upscaled.embeds[0]["title"].startswith("Upscaled")
    assert upscaled.embeds[0]["footer"]["text"] == f"upscale of #{parent_id} image 2"
    job = await env.storage.jobs.get(job_id_of(upscaled))
    assert (job.action, job.parent_job_id, job.parent_index) == (Action.UPSCALE, parent_id, 1)
    assert job.user_id == bob and job.has_init_image
    parent_row = await env.storage.jobs.get(parent_id)
    assert job.seeds == (parent_row.seeds[1],)
    assert (await env.storage.limits.usage(bob, guild)).hour_used == 1
    assert (await env.storage.limits.usage(alice, guild)).hour_used == 2
    assert upscaled.custom_ids[0] == f"sdbot:upscale:{job.id}:0"  # an upscale has buttons too


async def test_variation_and_reroll_make_new_jobs(start_bot: BotStarter) -> None:
    env = await start_bot()
    parent = await finished_job(env, f"a lantern {SMALL}")
    parent_id = job_id_of(parent)
    parent_seed = fields(parent)["Seeds"]

    varied = await child_result(
        env, await env.fake.click("alice", parent, f"sdbot:vary:{parent_id}:0")
    )
    assert varied.embeds[0]["title"].startswith("Variation")
    assert varied.attachments[0].image_size() == (64, 64)
    job = await env.storage.jobs.get(job_id_of(varied))
    assert (job.action, job.parent_job_id, job.parent_index) == (
        Action.VARIATION,
        parent_id,
        0,
    )

    rerolled = await child_result(
        env, await env.fake.click("bob", parent, f"sdbot:reroll:{parent_id}:0")
    )
    assert rerolled.embeds[0]["description"] == "a lantern"
    assert fields(rerolled)["Seeds"] != parent_seed
    assert fields(rerolled)["Steps"] == "2" and fields(rerolled)["Size"] == "64×64"
    job = await env.storage.jobs.get(job_id_of(rerolled))
    assert (job.action, job.parent_job_id) == (Action.REROLL, parent_id)


async def test_remix_opens_a_prefilled_modal_and_parses_flags(start_bot: BotStarter) -> None:
    env = await start_bot()
    parent = await finished_job(env, "a quiet harbor --size 64x64 --steps 2 --n 1 --no boats")
    parent_id = job_id_of(parent)
    opened = await env.fake.click("bob", parent, f"sdbot:remix:{parent_id}:0")
    await opened.wait_response()
    assert opened.response_type == 9 and opened.modal is not None
    inputs = text_inputs(opened.modal)
    assert inputs["prompt"]["value"] == "a quiet harbor"
    assert inputs["negative"]["value"] == "boats"

    bad = await env.fake.submit_modal("bob", opened, values={"prompt": "a harbor --bogus 1"})
    assert "unknown flag --bogus" in await ephemeral_text(bad)
    assert await env.job_count() == 1

    submitted = await env.fake.submit_modal(
        "bob", opened, values={"prompt": "a stormy harbor --steps 3 --seed 7"}
    )
    remixed = await child_result(env, submitted)
    values = fields(remixed)
    assert remixed.embeds[0]["description"] == "a stormy harbor"
    assert values["Steps"] == "3" and values["Seeds"] == "7" and values["Size"] == "64×64"
    assert values["Negative"] == "boats"
    job = await env.storage.jobs.get(job_id_of(remixed))
    assert (job.action, job.parent_job_id, job.user_id) == (
        Action.REMIX,
        parent_id,
        env.fake.user("bob").id,
    )


async def test_delete_is_for_the_requester_and_moderators(start_bot: BotStarter) -> None:
    env = await start_bot()
    first = await finished_job(env, f"first {SMALL}")
    second = await finished_job(env, f"second {SMALL}")

    refused = await env.fake.click("bob", first, f"sdbot:delete:{job_id_of(first)}:0")
    assert "only the member who asked for it, or moderators" in await ephemeral_text(refused)
    assert not first.deleted

    by_mod = await env.fake.click("mod", first, f"sdbot:delete:{job_id_of(first)}:0")
    await env.fake.wait_until(lambda: first.deleted)
    assert not by_mod.errors
    by_owner = await env.fake.click("alice", second, f"sdbot:delete:{job_id_of(second)}:0")
    await env.fake.wait_until(lambda: second.deleted)
    assert not by_owner.errors


async def test_share_posts_to_the_showcase_with_credit(start_bot: BotStarter) -> None:
    env = await start_bot()
    result = await finished_job(env, f"a glass whale {SMALL}")
    share = f"sdbot:share:{job_id_of(result)}:0"

    unset = await env.fake.click("alice", result, share)
    text = await ephemeral_text(unset)
    assert "no showcase channel" in text and "/config showcase" in text

    await reply(
        await env.fake.slash("admin", "general", "config showcase", {"channel": "showcase"})
    )
    not_yours = await env.fake.click("bob", result, share)
    assert "only the member who asked for it can share" in await ephemeral_text(not_yours)
    assert not env.fake.messages("showcase")

    shared = await env.fake.click("alice", result, share)
    confirmation = await shared.wait_followup()
    showcase = env.fake.channel("showcase")
    assert confirmation.ephemeral and f"<#{showcase.id}>" in confirmation.content
    (post,) = env.fake.messages("showcase")
    assert post.content == f"⭐ by <@{env.fake.user('alice').id}>: a glass whale"
    assert post.embeds[0]["description"] == "a glass whale"
    assert post.attachments and post.attachments[0].data[:4] == b"\x89PNG"

    await env.fake.forbid_channel("showcase")
    blocked = await env.fake.click("alice", result, share)
    answer = await blocked.wait_followup()
    assert answer.ephemeral and f"<#{showcase.id}>" in answer.content
    assert "something went wrong" not in answer.content and "permission" in answer.content


async def test_cancel_button_on_the_progress_message(start_bot: BotStarter, faults: Faults) -> None:
    env = await start_bot()
    gate = faults.gate()
    faults.on_batch = lambda jobs: gate.hold()
    await reply(await env.imagine("bob", f"holding the GPU {SMALL}"))
    await gate.entered.wait()
    progress = await reply(await env.imagine("alice", f"waiting {SMALL}"))
    job_id = job_id_of(progress)
    cancel = f"sdbot:cancel:{job_id}:0"

    refused = await env.fake.click("bob", progress, cancel)
    assert "not yours" in await ephemeral_text(refused)
    clicked = await env.fake.click("alice", progress, cancel)
    assert await ephemeral_text(clicked) == f"🛑 job #{job_id} cancelled"
    await env.fake.wait_until(lambda: "cancelled" in progress.content)
    assert progress.custom_ids == []
    assert (await env.storage.jobs.get(job_id)).state is JobState.CANCELLED
    gate.release()


async def test_two_members_remix_the_same_job(start_bot: BotStarter) -> None:
    env = await start_bot()
    parent = await finished_job(env, f"a paper boat {SMALL}")
    remix = f"sdbot:remix:{job_id_of(parent)}:0"
    alice_opened = await env.fake.click("alice", parent, remix)
    bob_opened = await env.fake.click("bob", parent, remix)
    await alice_opened.wait_response()
    await bob_opened.wait_response()
    by_bob = await env.fake.submit_modal("bob", bob_opened, values={"prompt": "a red boat"})
    await child_result(env, by_bob)
    by_alice = await env.fake.submit_modal("alice", alice_opened, values={"prompt": "a blue boat"})
    result = await child_result(env, by_alice)
    assert result.embeds[0]["description"] == "a blue boat"
    job = await env.storage.jobs.get(job_id_of(result))
    assert job.user_id == env.fake.user("alice").id


async def refused_click(env: BotEnv, user: str, message: FakeMessage, custom_id: str) -> str:
    """A click that must be refused privately, leaving no job, no quota used, nothing queued."""
    who, guild = env.fake.user(user).id, env.fake.guild.id
    jobs, used = await env.job_count(), (await env.storage.limits.usage(who, guild)).hour_used
    public = len([m for m in env.fake.messages("general") if not m.ephemeral])
    text = await ephemeral_text(await env.fake.click(user, message, custom_id))
    assert await env.job_count() == jobs, f"a refused click recorded a job: {text!r}"
    assert (await env.storage.limits.usage(who, guild)).hour_used == used
    snapshot = env.worker.snapshot()
    assert not snapshot.waiting and not snapshot.running
    assert len([m for m in env.fake.messages("general") if not m.ephemeral]) == public
    return text


async def test_buttons_obey_the_servers_limits_of_now(start_bot: BotStarter) -> None:
    env = await start_bot()
    parent = await finished_job(env, "three steps --size 64x64 --steps 3 --n 2")
    parent_id = job_id_of(parent)
    await reply(await env.fake.slash("admin", "general", "config limits", {"max_steps": 2}))

    for button in (f"reroll:{parent_id}:0", f"vary:{parent_id}:0"):
        text = await refused_click(env, "bob", parent, f"sdbot:{button}")
        assert "steps must be between 1 and 2, got 3" in text, (button, text)
        assert f"repeats job #{parent_id}'s settings" in text and "/imagine" in text
    # An upscale is of that image: a new /imagine would not help.
    text = await refused_click(env, "bob", parent, f"sdbot:upscale:{parent_id}:1")
    assert "steps must be between 1 and 2, got 3" in text, text
    assert f"job #{parent_id}'s settings" in text and "its image 2 cannot be upscaled" in text
    assert "/imagine" not in text

    await reply(await env.fake.slash("admin", "general", "config limits", {"max_steps": 0}))
    rerolled = await child_result(
        env, await env.fake.click("bob", parent, f"sdbot:reroll:{parent_id}:0")
    )
    assert fields(rerolled)["Steps"] == "3"


async def test_buttons_obey_the_bots_limits_after_a_restart(start_bot: BotStarter) -> None:
    before = await start_bot()
    parent = await finished_job(before, "two moons --size 64x64 --steps 2 --n 2")
    parent_id = job_id_of(parent)
    await before.stop()

    env = await start_bot(fake=before.fake, data_dir=before.data_dir, limits=Limits(max_count=1))
    for button in (f"reroll:{parent_id}:0", f"vary:{parent_id}:1"):
        text = await refused_click(env, "alice", parent, f"sdbot:{button}")
        assert "count must be between 1 and 1, got 2" in text, (button, text)
    # An upscale makes one image whatever the job had: the count limit cannot refuse it.
    upscaled = await child_result(
        env, await env.fake.click("alice", parent, f"sdbot:upscale:{parent_id}:1")
    )
    assert upscaled.attachments[0].image_size() == (128, 128)


async def test_upscale_is_bounded_by_the_pixel_limit_not_imagines_side_rule(
    start_bot: BotStarter,
) -> None:
    """/imagine makes at most 2048 px a side; an upscale of a wide image may go past that, as
    long as it fits the pixel limit (the bound for memory), and a refusal says the upscaled
    size and the limit."""
    env = await start_bot(limits=Limits(max_pixels=1200 * 1024))
    parent = await finished_job(env, "a wide valley --size 1088x272 --steps 2 --n 1")
    parent_id = job_id_of(parent)
    upscaled = await child_result(
        env, await env.fake.click("bob", parent, f"sdbot:upscale:{parent_id}:0")
    )
    assert upscaled.attachments[0].image_size() == (2176, 544)
    job = await env.storage.jobs.get(job_id_of(upscaled))
    assert job.request["kind"] == "upscale"
    assert (job.request["width"], job.request["height"]) == (2176, 544)

    square = await finished_job(env, "a square --size 640x512 --steps 2 --n 1")
    text = await refused_click(env, "bob", square, f"sdbot:upscale:{job_id_of(square)}:0")
    assert (
        "the upscaled image would be 1280x1024 (1,310,720 pixels); "
        "this bot's limit is 1,228,800 pixels" in text
    ), text
    assert "/imagine" not in text and "2048" not in text
