"""/help and /info through the real client: what they list, and that it follows the real state."""

from __future__ import annotations

import dataclasses
import re

import discord
import pytest

from bot import help as help_module
from bot.buttons import ACTIONS
from bot.help import BUTTONS, FIELD_TEXT, LIST_TEXT, _add_lines, _names
from generation.flags import FLAGS, _Flag, _word, flag_help, parse_prompt
from tests.bot.conftest import SMALL, BotEnv, BotStarter, FakeClock, job_id_of
from tests.bot.test_commands import reply, run_job
from tests.conftest import Faults
from tests.support.fake_discord import FakeMessage

EMBED_TOTAL = 6000


async def embed_reply(env: BotEnv, user: str, command: str) -> dict[str, str]:
    """`user` runs `/command`; its ephemeral embed's fields by name ("" for the description,
    continuation fields joined to the field they continue)."""
    message = await reply(await env.fake.slash(user, "general", command))
    assert message.ephemeral, f"/{command} must answer privately"
    assert len(message.embeds) == 1
    embed = message.embeds[0]
    assert _embed_length(message) <= EMBED_TOTAL
    fields = {"": embed.get("description", "")}
    name = ""
    for field in embed.get("fields", []):
        if field["name"] != "\u200b":
            name = field["name"]
            fields[name] = field["value"]
        else:
            fields[name] += "\n" + field["value"]
    return fields


def _embed_length(message: FakeMessage) -> int:
    embed = message.embeds[0]
    parts = [embed.get("title", ""), embed.get("description", "")]
    parts.append(embed.get("footer", {}).get("text", ""))
    parts += [f["name"] + f["value"] for f in embed.get("fields", [])]
    return sum(len(p) for p in parts)


def field_named(fields: dict[str, str], start: str) -> str:
    found = [value for name, value in fields.items() if name.startswith(start)]
    assert len(found) == 1, f"no single field named {start!r} in {list(fields)}"
    return found[0]


# The flag table and its help text


def test_every_flag_the_parser_accepts_has_help() -> None:
    docs = flag_help()
    assert sorted(n for doc in docs for n in doc.names) == sorted(f"--{n}" for n in FLAGS)
    for doc in docs:
        assert doc.text, f"{'/'.join(doc.names)} has no help text in generation/flags.py"
        prose, _ = parse_prompt(f"a cat {doc.example}")
        assert prose == "a cat", f"the example {doc.example!r} must parse as a flag"


def test_a_flag_added_without_help_text_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FLAGS, "style", _Flag("style", _word))
    undocumented = [doc.names for doc in flag_help() if not doc.text]
    assert undocumented == [("--style",)]


def test_every_result_button_has_help() -> None:
    assert set(BUTTONS) == set(ACTIONS)


def test_long_lists_are_cut_and_long_fields_continue() -> None:
    names = [f"model-{n:02}-with-a-rather-long-name" for n in range(40)]
    listed = _names(names)
    assert len(listed) <= LIST_TEXT + 20 and listed.endswith("more")
    shown = listed.count("model-")
    assert f"… and {40 - shown} more" in listed

    embed = discord.Embed()
    _add_lines(embed, "Models", [f"`{name}` · Stable Diffusion XL" for name in names])
    assert len(embed.fields) > 1 and embed.fields[0].name == "Models"
    assert all(field.name == "\u200b" for field in embed.fields[1:])
    assert all(len(field.value or "") <= FIELD_TEXT for field in embed.fields)
    joined = "\n".join(field.value or "" for field in embed.fields)
    assert all(name in joined for name in names), "continued, not dropped"


# /help


async def test_help_lists_commands_flags_and_buttons(start_bot: BotStarter) -> None:
    env = await start_bot()
    fields = await embed_reply(env, "alice", "help")
    commands = field_named(fields, "Commands")
    registered = env.fake.commands(env.fake.guild)
    assert {"imagine", "history", "show", "queue", "cancel", "settings", "stats", "config"} | {
        "help",
        "info",
    } == set(registered)
    for name in registered:
        assert re.search(rf"`/{name}[ `]", commands), f"/{name} is missing from /help"
    assert "`/show job`" in commands and "`/cancel [job]`" in commands
    assert "/config show|showcase|" in commands and "Manage Server" in commands

    flag_field = field_named(fields, "Inline flags")
    lines = flag_field.splitlines()
    docs = {doc.field: doc for doc in flag_help()}
    for name, spec in FLAGS.items():
        line = [line for line in lines if re.search(rf"`--{name}[ `]", line)]
        assert len(line) == 1, f"--{name} must be listed once in /help"
        assert docs[spec.field].text and docs[spec.field].text in line[0]
    model_line = next(line for line in lines if "`--model " in line)
    assert "tiny" in model_line, "the configured models come from the registry"
    assert "1:1, 16:9" in next(line for line in lines if "`--ar " in line)

    buttons = field_named(fields, "Buttons")
    for label in ("U1..U4", "V1..V4", "Reroll", "Remix", "Delete", "Share", "Cancel"):
        assert label in buttons


async def test_help_shows_this_servers_limits_and_what_is_left(start_bot: BotStarter) -> None:
    env = await start_bot(images_per_hour=10, images_per_day=50)
    before = field_named(await embed_reply(env, "alice", "help"), "Your limits here")
    assert "Steps per request: up to **60** (the bot's limit)" in before
    assert "Images per request: up to **4**" in before
    assert "Images this hour: 0 of 10 (10 left)" in before

    await env.fake.slash("admin", "general", "config limits", {"max_steps": 3})
    await run_job(env, "alice", "two cats --size 64x64 --steps 2 --n 2")
    fields = await embed_reply(env, "alice", "help")
    after = field_named(fields, "Your limits here")
    assert "Steps per request: up to **3** (this server's limit)" in after
    assert "Images this hour: 2 of 10 (8 left)" in after
    assert "Images today: 2 of 50 (48 left)" in after
    assert re.search(r"Next image frees <t:\d+:R>", after)
    flags = field_named(fields, "Inline flags").splitlines()
    assert "; 1-3 here" in next(line for line in flags if "`--steps " in line)

    bob = field_named(await embed_reply(env, "bob", "help"), "Your limits here")
    assert "Images this hour: 0 of 10 (10 left)" in bob, "the limits are the asker's own"

    await env.fake.slash("admin", "general", "config limits", {"max_steps": 100})
    higher = field_named(await embed_reply(env, "alice", "help"), "Your limits here")
    assert "up to **60** (the bot's limit)" in higher, "a server cannot raise the bot's limit"


# /info


async def test_info_names_model_device_queue_speed_and_uptime(
    start_bot: BotStarter, faults: Faults, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await start_bot()
    idle = await embed_reply(env, "alice", "info")
    assert re.search(
        r"`tiny` · built-in tiny random model · default · \*\*loaded\*\*", idle["Models"]
    )
    assert idle["Device"] == "CPU · float32"
    assert idle["torch.compile"] == "off"
    assert idle["Queue"] == "0 jobs running (0 images) · 0 jobs waiting"
    assert idle["Speed"] == "not measured yet (no job has run)"
    assert idle["Uptime"] == "0m"

    await run_job(env, "bob", f"measure the step time {SMALL}")
    gate = faults.gate()
    faults.on_batch = lambda jobs: gate.hold()
    running = await reply(await env.imagine("bob", f"running {SMALL}"))
    await gate.entered.wait()
    waiting = await reply(await env.imagine("alice", f"waiting {SMALL}"))
    busy = await embed_reply(env, "alice", "info")  # answered while the GPU thread is held
    assert busy["Queue"] == "1 job running (1 image) · 1 job waiting"
    speed = r"(\d+\.\d{3}) s per image-step \(≈ (\d+\.\d) s per 4-step image\)"  # tiny: 4
    measured = re.fullmatch(speed, busy["Speed"])
    assert measured, busy["Speed"]
    assert float(measured[1]) == pytest.approx(
        env.worker.runner.timer.seconds_per_image_step, abs=1e-3
    )
    gate.release()
    for message in (running, waiting):
        await env.result(job_id_of(message))

    runner = env.worker.runner  # SDBOT_COMPILE on; the model was loaded without it
    monkeypatch.setattr(runner, "placement", dataclasses.replace(runner.placement, compile=True))
    compiled = (await embed_reply(env, "alice", "info"))["torch.compile"]
    assert compiled == "on for the default model (`tiny`); `tiny` runs uncompiled"

    clock.advance(26 * 3600 + 5 * 60)
    assert (await embed_reply(env, "alice", "info"))["Uptime"] == "1d 2h 5m"


async def test_the_gpu_is_named_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    asked: list[object] = []

    def get_device_name(device: object = None) -> str:
        asked.append(device)
        return "NVIDIA H100 80GB HBM3"

    monkeypatch.setattr(torch.cuda, "get_device_name", get_device_name)
    monkeypatch.setattr(help_module, "_device_names", {})
    for _ in range(3):
        assert await help_module.device_name("cuda") == "NVIDIA H100 80GB HBM3 (cuda)"
    assert asked == ["cuda"], "torch is asked once, not per request"
    assert await help_module.device_name("cpu") == "CPU"
