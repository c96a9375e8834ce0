"""/help (how to use the bot, with this member's limits here) and /info (the bot's state).

Both are built from the real definitions, so they cannot drift from what the bot
does: the command list from the command tree, the flags from `generation.flags`,
the models from the registry, the limits from the service and the rate limiter.
/info reads the worker's state from the event loop without touching the pipeline:
plain attributes of the runner and the queue snapshot that /queue uses.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.admin import quota_lines
from bot.buttons import ACTIONS
from bot.commands import ASPECTS, bot_of
from bot.launch import requester
from generation.flags import FlagHelp, flag_help
from generation.models import SCHEDULERS
from generation.request import Limits
from generation.validation import MAX_SIDE, MIN_SIDE, SIDE_STEP

if TYPE_CHECKING:
    from bot.client import SdBot
    from generation.loader import LoadedModel

FIELD_TEXT = 1024  # Discord's limit on one embed field's value
LIST_TEXT = 300  # the most a list of names (models, aspects) takes in one line
MAX_MODEL_LINES = 20
CONTINUED = "\u200b"  # the name of a field that continues the one above (names can't be empty)

# What each result button does, keyed by its action in the custom_id (`bot.buttons`).
BUTTONS: dict[str, tuple[str, str]] = {
    "upscale": ("U1..U4", "upscale that image 2x"),
    "vary": ("V1..V4", "a variation of that image"),
    "reroll": ("🔄 Reroll", "the same request with new seeds"),
    "remix": ("✏️ Remix", "edit the prompt (flags work), then run it"),
    "delete": ("🗑️ Delete", "delete the result (the requester, or Manage Messages)"),
    "share": ("⭐ Share", "the requester posts it to the showcase channel"),
    "cancel": ("Cancel", "while it runs: the requester stops the job"),
}

_device_names: dict[str, str] = {}


@app_commands.command(name="help", description="How to use sdbot, and your limits here")
async def help_command(interaction: discord.Interaction) -> None:
    bot = bot_of(interaction)
    config = await bot.service.guild_config(interaction.guild_id)
    limits = bot.service.limits_for(config)
    embed = discord.Embed(
        title="How to use sdbot",
        description=(
            "Type `/imagine` and a prompt: your images arrive as a grid with buttons under it. "
            "Options and inline flags set the size, steps and more. For each setting a flag "
            "beats the same option, which beats your `/settings` defaults, which beat the "
            "model's preset."
        ),
    )
    _add_lines(embed, "Commands", _command_lines(bot))
    _add_lines(embed, "Inline flags (type them in the prompt)", _flag_lines(bot, limits))
    _add_lines(embed, "Buttons under a result", _button_lines())
    where = "here" if interaction.guild_id is not None else "in direct messages"
    lines = _limit_lines(bot, limits, server_capped=limits.max_steps < bot.service.limits.max_steps)
    lines += await quota_lines(bot, requester(interaction))
    _add_lines(embed, f"Your limits {where}", lines)
    embed.set_footer(text="A job started by a button is yours and counts toward your limits.")
    await interaction.response.send_message(embed=embed, ephemeral=True)


def _command_lines(bot: SdBot) -> list[str]:
    lines = []
    for command in bot.tree.get_commands(type=discord.AppCommandType.chat_input):
        if isinstance(command, app_commands.Group):
            usage = "|".join(sub.name for sub in command.commands)
        else:
            required = [p.name for p in command.parameters if p.required]
            optional = [p.name for p in command.parameters if not p.required]
            extra = [f"[{optional[0]}]"] if len(optional) == 1 else ["[options]"] * bool(optional)
            usage = " ".join(required + extra)
        lines.append(f"`/{command.name}{' ' + usage if usage else ''}`: {command.description}")
    return lines


def _flag_lines(bot: SdBot, limits: Limits) -> list[str]:
    extras = {
        "aspect": f"common: {_names(ASPECTS)}",
        "size": (
            f"multiples of {SIDE_STEP}, {MIN_SIDE}-{MAX_SIDE} a side, "
            f"at most {limits.max_pixels:,} pixels"
        ),
        "steps": f"1-{limits.max_steps} here",
        "count": f"1-{limits.max_count}",
        "model": f"here: {_names(bot.registry.names())}",
        "scheduler": _names(SCHEDULERS),
    }
    examples = {"model": f"--model {bot.registry.default.name}"}  # one that exists here
    return [
        _flag_line(flag, extras.get(flag.field), examples.get(flag.field, flag.example))
        for flag in flag_help()
    ]


def _flag_line(flag: FlagHelp, extra: str | None, example: str) -> str:
    """`--ar 16:9` (also `--aspect`): what it sets; the values that work here."""
    aliases = [f"`{name}`" for name in flag.names if name != example.split()[0]]
    also = f" (also {', '.join(aliases)})" if aliases else ""
    text = flag.text + (f"; {extra}" if extra else "")
    return f"`{example}`{also}: {text}"


def _button_lines() -> list[str]:
    return [f"**{BUTTONS[a][0]}**: {BUTTONS[a][1]}" for a in ACTIONS if a in BUTTONS]


def _limit_lines(bot: SdBot, limits: Limits, *, server_capped: bool) -> list[str]:
    whose = "this server's limit" if server_capped else "the bot's limit"
    side = math.isqrt(limits.max_pixels)
    example = f" ({side}×{side})" if side * side == limits.max_pixels else ""
    return [
        f"Steps per request: up to **{limits.max_steps}** ({whose})",
        f"Images per request: up to **{limits.max_count}**",
        f"Image size: up to {limits.max_pixels:,} pixels{example}",
        f"Jobs waiting at once: up to {bot.service.worker.queue.max_per_user}",
    ]


@app_commands.command(name="info", description="The bot's models, device, queue and speed")
async def info_command(interaction: discord.Interaction) -> None:
    bot = bot_of(interaction)
    worker = bot.service.worker
    runner = worker.runner
    placement = runner.placement
    resident = runner.model  # the GPU thread's: read once, attributes only
    loaded = resident.spec.name if resident is not None else None
    snapshot = worker.snapshot()
    embed = discord.Embed(title="sdbot status")
    _add_lines(embed, "Models", _model_lines(bot, loaded))
    device = await device_name(placement.device)
    dtype = str(placement.dtype).removeprefix("torch.")
    memory = " · low-VRAM mode" if placement.low_vram else ""
    embed.add_field(name="Device", value=f"{device} · {dtype}{memory}", inline=False)
    embed.add_field(name="torch.compile", value=_compile_state(bot, resident), inline=True)
    images = sum(job.request.count for job in snapshot.running)
    queue = (
        f"{_count(len(snapshot.running), 'job')} running ({_count(images, 'image')}) · "
        f"{_count(len(snapshot.waiting), 'job')} waiting"
    )
    embed.add_field(name="Queue", value=queue, inline=True)
    per_step = snapshot.seconds_per_image_step
    steps = bot.registry.default.family.steps
    speed = (
        "not measured yet (no job has run)"
        if per_step is None
        else f"{per_step:.3f} s per image-step (≈ {per_step * steps:.1f} s per {steps}-step image)"
    )
    embed.add_field(name="Speed", value=speed, inline=True)
    embed.add_field(name="Uptime", value=_uptime(bot.clock() - bot.started_at), inline=True)
    await interaction.response.send_message(embed=embed, ephemeral=True)


def _compile_state(bot: SdBot, resident: LoadedModel | None) -> str:
    """Whether torch.compile is on, and whether the loaded model runs compiled (with
    SDBOT_COMPILE only the default model is compiled; the runner decides at load)."""
    if not bot.service.worker.runner.placement.compile:
        return "off"
    default = f"on for the default model (`{bot.registry.default.name}`)"
    if resident is None:
        return default
    if not resident.placement.compile:
        return f"{default}; `{resident.spec.name}` runs uncompiled"
    took = f" in {resident.compile_s:.0f}s" if resident.compile_s is not None else ""
    return f"on; `{resident.spec.name}` was compiled at load{took}"


def _model_lines(bot: SdBot, loaded: str | None) -> list[str]:
    lines = []
    for spec in bot.registry:
        marks = [spec.family.label]
        if spec.name == bot.registry.default.name:
            marks.append("default")
        if spec.name == loaded:
            marks.append("**loaded**")
        lines.append(f"`{spec.name}` · {' · '.join(marks)}")
    if loaded is None:
        lines.insert(0, "No model is loaded right now (one is loading, or none has yet).")
    if len(lines) > MAX_MODEL_LINES:
        more = len(lines) - MAX_MODEL_LINES + 1
        lines = [*lines[: MAX_MODEL_LINES - 1], f"… and {more} more"]
    return lines


async def device_name(device: str) -> str:
    """A readable name of `device` ("NVIDIA H100 80GB HBM3 (cuda)"), asked of torch once."""
    name = _device_names.get(device)
    if name is None:
        name = await asyncio.to_thread(_ask_torch, device)
        _device_names[device] = name
    return name


def _ask_torch(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        try:
            return f"{torch.cuda.get_device_name(device)} ({device})"
        except (RuntimeError, AssertionError, ValueError):
            return device
    return {"cpu": "CPU", "mps": "Apple GPU (mps)"}.get(device, device)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _uptime(seconds: float) -> str:
    minutes = max(0, int(seconds)) // 60
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(days or hours) + [f"{minutes}m"]
    return " ".join(parts)


def _names(names: Iterable[str]) -> str:
    """Names joined with commas, cut short (with a count of the rest) past `LIST_TEXT`."""
    names = list(names)
    shown: list[str] = []
    for index, name in enumerate(names):
        if len(", ".join([*shown, name])) > LIST_TEXT:
            return ", ".join(shown) + f" … and {len(names) - index} more"
        shown.append(name)
    return ", ".join(shown)


def _add_lines(embed: discord.Embed, name: str, lines: Iterable[str]) -> None:
    """Lines as one field, continued in further fields where they outgrow one."""
    chunk: list[str] = []
    for line in lines:
        line = line if len(line) <= FIELD_TEXT else line[: FIELD_TEXT - 1] + "…"
        if chunk and len("\n".join([*chunk, line])) > FIELD_TEXT:
            embed.add_field(name=name, value="\n".join(chunk), inline=False)
            name, chunk = CONTINUED, []
        chunk.append(line)
    if chunk:
        embed.add_field(name=name, value="\n".join(chunk), inline=False)
