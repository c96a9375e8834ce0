"""The slash commands. Each turns an interaction into plain values and calls a service."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot import render
from bot.errors import Refused
from bot.launch import defer_if_slow, launch, requester
from bot.service import Lineage
from generation.errors import InvalidRequest
from generation.images import MAX_INIT_BYTES, inspect_image
from generation.models import SCHEDULERS
from generation.request import Kind, RequestOptions
from generation.validation import build_request
from storage.records import Action

if TYPE_CHECKING:
    from bot.client import SdBot

ASPECTS = ("1:1", "16:9", "9:16", "3:2", "2:3", "4:3", "3:4", "21:9", "4:5")
PER_PAGE = 5


def bot_of(interaction: discord.Interaction) -> SdBot:
    return interaction.client  # type: ignore[return-value]


async def model_autocomplete(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    names = bot_of(interaction).registry.names()
    return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n][:25]


async def aspect_autocomplete(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=a, value=a) for a in ASPECTS if a.startswith(current)][:25]


@app_commands.command(name="imagine", description="Turn a prompt into images")
@app_commands.describe(
    prompt="What to draw. Inline flags work too: --ar 16:9 --seed 42 --no text --n 2",
    negative="What to keep out of the image",
    aspect="Aspect ratio, e.g. 16:9 (snapped to the model's native size)",
    count="How many images (1-4)",
    seed="Seed for reproducible results (0-4294967295)",
    steps="Denoising steps (more is slower, often finer)",
    guidance="How closely to follow the prompt (CFG scale)",
    model="Which model to use",
    scheduler="Sampler",
    image="A starting image for image-to-image",
    strength="How much to change the starting image (0-1)",
)
@app_commands.autocomplete(model=model_autocomplete, aspect=aspect_autocomplete)
@app_commands.choices(scheduler=[app_commands.Choice(name=s, value=s) for s in SCHEDULERS])
async def imagine(
    interaction: discord.Interaction,
    prompt: app_commands.Range[str, 1, 6000],
    negative: app_commands.Range[str, 0, 6000] | None = None,
    aspect: str | None = None,
    count: app_commands.Range[int, 1, 4] | None = None,
    seed: app_commands.Range[int, 0, 4294967295] | None = None,
    steps: app_commands.Range[int, 1, 500] | None = None,
    guidance: app_commands.Range[float, 0.0, 30.0] | None = None,
    model: str | None = None,
    scheduler: str | None = None,
    image: discord.Attachment | None = None,
    strength: app_commands.Range[float, 0.01, 1.0] | None = None,
) -> None:
    bot = bot_of(interaction)
    reading = asyncio.ensure_future(_read_attachment(image))
    if image is not None:
        await defer_if_slow(interaction, reading)  # a big upload can outlast the 3 seconds
    init, size = await reading
    config = await bot.service.guild_config(interaction.guild_id)
    options = RequestOptions(
        negative_prompt=negative,
        aspect=aspect,
        count=count,
        seed=seed,
        steps=steps,
        guidance=guidance,
        model=model,
        scheduler=scheduler,
        strength=strength,
    )
    request = build_request(
        prompt,
        options,
        defaults=await bot.service.defaults(interaction.user.id),
        registry=bot.registry,
        limits=bot.service.limits_for(config),
        kind=Kind.IMG2IMG if init is not None else Kind.TXT2IMG,
        init_image=init,
        init_size=size,
        rng=random.Random(),
    )
    await launch(interaction, request, Lineage(Action.IMAGINE))


async def _read_attachment(
    attachment: discord.Attachment | None,
) -> tuple[bytes | None, tuple[int, int] | None]:
    if attachment is None:
        return None, None
    if attachment.size > MAX_INIT_BYTES:
        raise InvalidRequest(
            "image",
            f"the image is {attachment.size / 2**20:.1f} MiB; the limit is "
            f"{MAX_INIT_BYTES / 2**20:.0f} MiB",
        )
    if attachment.content_type and not attachment.content_type.startswith("image/"):
        raise InvalidRequest(
            "image", f"the attachment must be an image; got {attachment.content_type}"
        )
    data = await attachment.read()
    size = await asyncio.to_thread(inspect_image, data)
    return data, size


@app_commands.command(name="history", description="Your recent jobs")
@app_commands.describe(page="Page number (newest first)")
async def history(
    interaction: discord.Interaction, page: app_commands.Range[int, 1, 10000] = 1
) -> None:
    embed, view = await history_page(bot_of(interaction), interaction.user.id, page)
    await interaction.response.send_message(embed=embed, view=view, ephemeral=True)
    view.stop()


async def history_page(
    bot: SdBot, user_id: int, page: int
) -> tuple[discord.Embed, discord.ui.View]:
    result = await bot.storage.jobs.history(user_id, page=page, per_page=PER_PAGE)
    if result.page > result.pages:  # past the end: show the last page
        result = await bot.storage.jobs.history(user_id, page=result.pages, per_page=PER_PAGE)
    embed = discord.Embed(title="Your jobs", description="" if result.items else "No jobs yet.")
    for record in result.items:
        prompt = str(record.request.get("prompt", ""))
        embed.add_field(
            name=f"#{record.id} · {record.state.value} · {record.action.value}",
            value=f"{prompt[:200]}\n<t:{int(record.created_at)}:R> · `/show job:{record.id}`",
            inline=False,
        )
    embed.set_footer(text=f"page {result.page} of {result.pages} · {result.total} jobs")
    view = discord.ui.View(timeout=None)
    if result.page > 1:
        view.add_item(
            discord.ui.Button(label="◀ Newer", custom_id=f"sdbot:hist:{user_id}:{result.page - 1}")
        )
    if result.has_next:
        view.add_item(
            discord.ui.Button(label="Older ▶", custom_id=f"sdbot:hist:{user_id}:{result.page + 1}")
        )
    return embed, view


@app_commands.command(name="show", description="Post one of your jobs again, with working buttons")
@app_commands.describe(job="The job number (see /history)")
async def show(interaction: discord.Interaction, job: app_commands.Range[int, 1, 2**62]) -> None:
    bot = bot_of(interaction)
    record = await bot.storage.jobs.get(job)
    same_server = record.guild_id is not None and record.guild_id == interaction.guild_id
    if record.user_id != interaction.user.id and not same_server:
        raise Refused(f"job #{job} is neither yours nor from this server")
    if record.state.value != "done":
        raise Refused(f"job #{job} is {record.state.value}; only finished jobs can be shown")
    await interaction.response.defer(thinking=True)
    outgoing = await bot.delivery.compose(record, destination=interaction.channel_id)
    view = render.result_view(record.id, outgoing.count)
    files = outgoing.files()
    await interaction.followup.send(
        content=outgoing.content, embed=outgoing.embed, files=files, view=view
    )
    view.stop()


@app_commands.command(name="queue", description="What is running, and where your jobs stand")
async def queue(interaction: discord.Interaction) -> None:
    bot = bot_of(interaction)
    snapshot = bot.service.worker.snapshot()
    me = str(interaction.user.id)
    lines = []
    if snapshot.running:
        ids = ", ".join(f"#{job.id}" for job in snapshot.running)
        lines.append(f"🎨 running: {ids}")
    else:
        lines.append("🎨 nothing running")
    lines.append(f"⏳ waiting: {len(snapshot.waiting)} job(s)")
    for job, position, eta in snapshot.waiting:
        if job.user == me:
            when = f", starts in about {eta:.0f}s" if eta is not None else ""
            lines.append(f"• your #{job.id}: position {position}{when}")
    mine_running = [job for job in snapshot.running if job.user == me]
    for job in mine_running:
        lines.append(f"• your #{job.id} is running now")
    await interaction.response.send_message("\n".join(lines), ephemeral=True)


@app_commands.command(name="cancel", description="Cancel one of your waiting or running jobs")
@app_commands.describe(job="The job number; leave empty for your latest")
async def cancel(
    interaction: discord.Interaction, job: app_commands.Range[int, 1, 2**62] | None = None
) -> None:
    bot = bot_of(interaction)
    who = requester(interaction)
    if job is None:
        active = await bot.storage.jobs.active_for_user(who.user_id)
        if not active:
            raise Refused("you have no waiting or running jobs")
        job = active[-1].id
    await bot.service.cancel(job, who)
    await interaction.response.send_message(f"🛑 job #{job} cancelled", ephemeral=True)


def register_commands(tree: app_commands.CommandTree) -> None:  # type: ignore[type-arg]
    from bot.admin import config_group, settings_command, stats_command
    from bot.help import help_command, info_command

    commands: list[app_commands.Command[Any, Any, Any] | app_commands.Group] = [
        imagine,
        history,
        show,
        queue,
        cancel,
        settings_command,
        stats_command,
        help_command,
        info_command,
        config_group,
    ]
    for command in commands:
        tree.add_command(command)
