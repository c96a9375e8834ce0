"""Per-user settings, usage stats, and the server admin's /config."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.commands import model_autocomplete
from bot.errors import Refused
from generation.flags import parse_aspect, shown
from storage.guilds import NsfwPolicy
from storage.settings import UserDefaults

if TYPE_CHECKING:
    from bot.client import SdBot
    from bot.service import Requester


def _bot(interaction: discord.Interaction) -> SdBot:
    return interaction.client  # type: ignore[return-value]


def _describe_defaults(defaults: UserDefaults) -> str:
    values = defaults.as_dict()
    if not values:
        return "No saved defaults: every /imagine uses the model's preset."
    return "\n".join(f"• **{k}**: {v}" for k, v in values.items())


@app_commands.command(name="settings", description="Your defaults for /imagine")
@app_commands.describe(
    model="Default model",
    aspect="Default aspect ratio, e.g. 3:2",
    steps="Default steps",
    guidance="Default guidance (CFG)",
    negative="Default negative prompt",
    count="Default number of images (1-4)",
    reset="Forget all your saved defaults",
)
async def settings_command(
    interaction: discord.Interaction,
    model: str | None = None,
    aspect: str | None = None,
    steps: app_commands.Range[int, 1, 500] | None = None,
    guidance: app_commands.Range[float, 0.0, 30.0] | None = None,
    negative: app_commands.Range[str, 0, 1500] | None = None,
    count: app_commands.Range[int, 1, 4] | None = None,
    reset: bool = False,
) -> None:
    bot = _bot(interaction)
    user_id = interaction.user.id
    if reset:
        await bot.storage.settings.clear(user_id)
        await interaction.response.send_message("Your defaults are cleared.", ephemeral=True)
        return
    changes: dict[str, object] = {}
    if model is not None:
        changes["model"] = bot.registry.get(model).name  # UnknownModel names the choices
    if aspect is not None:
        if parse_aspect(aspect) is None:
            raise Refused(f"aspect must look like 16:9; got {shown(aspect)}")
        changes["aspect"] = aspect
    if steps is not None:
        if steps > bot.service.limits.max_steps:
            raise Refused(
                f"steps must be between 1 and {bot.service.limits.max_steps}, got {steps}"
            )
        changes["steps"] = steps
    for name, value in (("guidance", guidance), ("negative_prompt", negative), ("count", count)):
        if value is not None:
            changes[name] = value
    if changes:
        current = await bot.storage.settings.update(user_id, **changes)  # type: ignore[arg-type]
        title = "Saved. Your defaults:"
    else:
        current = await bot.storage.settings.get(user_id)
        title = "Your defaults:"
    await interaction.response.send_message(
        f"{title}\n{_describe_defaults(current)}", ephemeral=True
    )


settings_command.autocomplete("model")(model_autocomplete)


@app_commands.command(name="stats", description="Your usage and the images you have left")
async def stats_command(interaction: discord.Interaction) -> None:
    bot = _bot(interaction)
    from bot.launch import requester

    who = requester(interaction)
    jobs = await bot.storage.jobs.history(who.user_id, page=1, per_page=1)
    lines = [f"Jobs so far: **{jobs.total}**", *await quota_lines(bot, who)]
    await interaction.response.send_message("\n".join(lines), ephemeral=True)


async def quota_lines(bot: SdBot, who: Requester) -> list[str]:
    """Where `who` stands against the image limits where they ask (/stats and /help)."""
    quota = await bot.storage.limits.usage(who.user_id, who.guild_id, who.role_ids)
    if quota.exempt:
        return ["You are exempt from the image limits here."]
    lines = [
        _window("this hour", quota.hour_used, quota.hour_limit, quota.hour_left),
        _window("today", quota.day_used, quota.day_limit, quota.day_left),
    ]
    if quota.next_free_at is not None:
        lines.append(f"Next image frees <t:{int(quota.next_free_at)}:R>")
    return lines


def _window(label: str, used: int, limit: int | None, left: int | None) -> str:
    if limit is None:
        return f"Images {label}: {used} (no limit)"
    return f"Images {label}: {used} of {limit} ({left} left)"


config_group = app_commands.Group(
    name="config",
    description="Server settings for sdbot (Manage Server only)",
    guild_only=True,
    default_permissions=discord.Permissions(manage_guild=True),
)


def _toggled(ids: frozenset[int], item: int, present: bool) -> frozenset[int]:
    return ids | {item} if present else ids - {item}


def _require_manager(interaction: discord.Interaction) -> int:
    """Discord hides /config from others, but the check is ours too."""
    if interaction.guild_id is None:
        raise Refused("/config works in servers only")
    if not interaction.permissions.manage_guild:
        raise Refused("/config needs the Manage Server permission")
    return interaction.guild_id


async def _reply_config(interaction: discord.Interaction, guild_id: int, note: str) -> None:
    config = await _bot(interaction).storage.guilds.get(guild_id)
    allowed = ", ".join(f"<#{c}>" for c in sorted(config.allowed_channel_ids)) or "all channels"
    lines = [
        note,
        f"Showcase: {f'<#{config.showcase_channel_id}>' if config.showcase_channel_id else 'none'}",
        f"Allowed channels: {allowed}",
        f"Banned words: {len(config.banned_words)}",
        f"NSFW policy: {config.nsfw_policy.value}",
        f"Images per hour: {config.images_per_hour or 'bot default'}; "
        f"per day: {config.images_per_day or 'bot default'}",
        f"Max steps: {config.max_steps or 'bot default'}",
        f"Exempt roles: {', '.join(f'<@&{r}>' for r in sorted(config.exempt_role_ids)) or 'none'}",
    ]
    await interaction.response.send_message("\n".join(lines), ephemeral=True)


@config_group.command(name="show", description="Show this server's sdbot settings")
async def config_show(interaction: discord.Interaction) -> None:
    await _reply_config(interaction, _require_manager(interaction), "**sdbot settings**")


@config_group.command(name="showcase", description="Where the Share button posts")
@app_commands.describe(channel="The showcase channel; leave empty to turn sharing off")
async def config_showcase(
    interaction: discord.Interaction, channel: discord.TextChannel | None = None
) -> None:
    guild_id = _require_manager(interaction)
    await _bot(interaction).storage.guilds.update(
        guild_id, showcase_channel_id=channel.id if channel else None
    )
    await _reply_config(interaction, guild_id, "Showcase updated.")


@config_group.command(name="channel", description="Allow or disallow /imagine in a channel")
@app_commands.describe(
    channel="The channel", allowed="Allow it (the list starts empty: all allowed)"
)
async def config_channel(
    interaction: discord.Interaction, channel: discord.TextChannel, allowed: bool
) -> None:
    guild_id = _require_manager(interaction)
    store = _bot(interaction).storage.guilds
    channels = _toggled((await store.get(guild_id)).allowed_channel_ids, channel.id, allowed)
    await store.update(guild_id, allowed_channel_ids=channels)
    await _reply_config(interaction, guild_id, "Channels updated.")


@config_group.command(name="banned-words", description="Add or remove banned words")
@app_commands.describe(add="Comma-separated words to ban", remove="Comma-separated words to allow")
async def config_banned(
    interaction: discord.Interaction, add: str | None = None, remove: str | None = None
) -> None:
    guild_id = _require_manager(interaction)
    store = _bot(interaction).storage.guilds
    words = list((await store.get(guild_id)).banned_words)
    removed = {w.strip().casefold() for w in (remove or "").split(",") if w.strip()}
    words = [w for w in words if w not in removed]
    words += [w.strip() for w in (add or "").split(",") if w.strip()]
    await store.update(guild_id, banned_words=words)
    await _reply_config(interaction, guild_id, "Banned words updated.")


@config_group.command(name="nsfw", description="What happens to images the safety checker flags")
@app_commands.choices(policy=[app_commands.Choice(name=p.value, value=p.value) for p in NsfwPolicy])
async def config_nsfw(interaction: discord.Interaction, policy: str) -> None:
    guild_id = _require_manager(interaction)
    await _bot(interaction).storage.guilds.update(guild_id, nsfw_policy=NsfwPolicy(policy))
    await _reply_config(interaction, guild_id, "NSFW policy updated.")


@config_group.command(name="limits", description="Per-member image limits on this server")
@app_commands.describe(
    images_per_hour="Images per member per hour (0 = bot default)",
    images_per_day="Images per member per day (0 = bot default)",
    max_steps="Most steps per request (0 = bot default)",
)
async def config_limits(
    interaction: discord.Interaction,
    images_per_hour: app_commands.Range[int, 0, 100000] | None = None,
    images_per_day: app_commands.Range[int, 0, 1000000] | None = None,
    max_steps: app_commands.Range[int, 0, 500] | None = None,
) -> None:
    guild_id = _require_manager(interaction)
    changes = {
        name: (value or None)
        for name, value in (
            ("images_per_hour", images_per_hour),
            ("images_per_day", images_per_day),
            ("max_steps", max_steps),
        )
        if value is not None
    }
    await _bot(interaction).storage.guilds.update(guild_id, **changes)  # type: ignore[arg-type]
    await _reply_config(interaction, guild_id, "Limits updated.")


@config_group.command(name="exempt-role", description="Let a role skip the image limits")
async def config_exempt(interaction: discord.Interaction, role: discord.Role, exempt: bool) -> None:
    guild_id = _require_manager(interaction)
    store = _bot(interaction).storage.guilds
    roles = _toggled((await store.get(guild_id)).exempt_role_ids, role.id, exempt)
    await store.update(guild_id, exempt_role_ids=roles)
    await _reply_config(interaction, guild_id, "Exempt roles updated.")
