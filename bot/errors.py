"""The one error handler: typed errors become ephemeral replies, the rest get a reference.

Domain errors (`generation.errors`, `storage.errors`) and the bot's own refusals
(`Refused`) carry messages written for users. Anything else is a bug: it is
logged with its traceback and a short reference the user can quote to the admin.
"""

from __future__ import annotations

import logging
import secrets

import discord
from discord import app_commands

from generation.errors import GenerationError
from storage.errors import DatabaseBusy, ImageMissing, JobNotFound, RateLimited, StorageError

log = logging.getLogger(__name__)


class Refused(Exception):
    """A request the bot turns down (permissions, channel, banned word): the message says why."""


def user_message(error: BaseException) -> str | None:
    """The message to show for a known error, or None for an unexpected one."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, RateLimited):
        if error.next_free_epoch is None:
            return f"⛔ {error}"
        text = str(error).replace(
            f"the next frees at {error.next_free_epoch}",
            f"the next frees <t:{error.next_free_epoch}:R>",
        )
        return f"⏳ {text}"
    if isinstance(error, Refused | GenerationError | JobNotFound | ImageMissing):
        return f"⚠️ {error}"
    if isinstance(error, DatabaseBusy):  # its text names the database file: not for users
        return "⏳ the bot's database is busy right now; try again in a moment"
    if isinstance(error, StorageError):
        return f"⚠️ {error}"
    if isinstance(error, app_commands.MissingPermissions):
        return f"⛔ you need the {', '.join(error.missing_permissions)} permission for this"
    if isinstance(error, app_commands.NoPrivateMessage):
        return "⛔ this command works in servers only"
    if isinstance(error, app_commands.CheckFailure):
        return f"⛔ {error}"
    return None


async def reply_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Answer `interaction` with an ephemeral message for `error`; log the unexpected."""
    message = user_message(error)
    if message is None:
        reference = secrets.token_hex(4)
        original = getattr(error, "original", error)
        log.error(
            "unexpected error (ref %s) in %s", reference, _describe(interaction), exc_info=original
        )
        message = f"❌ something went wrong on our side (reference `{reference}`); tell the admin."
    try:
        if interaction.response.is_done():
            await _withdraw_public_thinking(interaction)
            await interaction.followup.send(message, ephemeral=True)
        else:
            await interaction.response.send_message(message, ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("could not send an error reply: %s", exc)


async def _withdraw_public_thinking(interaction: discord.Interaction) -> None:
    """Take down a public "thinking" message, so that the reply after it stays private.

    Discord's first followup after a deferred response replaces the "thinking" message and
    keeps its visibility (the ephemeral flag is ignored): sent that way, one member's
    refusal would show to the whole channel. Once that message is deleted, a followup is a
    new message with its own flags. Only a message still "thinking" is touched; a progress
    message the deferred response already became stays.

    Best effort: whatever fails here is logged, never raised, so the reply is sent anyway
    (a member left with "thinking…" and no answer is worse than an answer in its place).
    """
    if interaction.response.type is not discord.InteractionResponseType.deferred_channel_message:
        return  # answered with a message, or a silent defer of a component's own message
    try:
        await _take_down_thinking(interaction)
    except Exception as exc:
        log.warning(
            "could not take down the thinking message of %s: %s",
            _describe(interaction),
            exc,
            exc_info=not isinstance(exc, discord.HTTPException),
        )


async def _take_down_thinking(interaction: discord.Interaction) -> None:
    """Delete the deferred response if it is still a public "thinking" message; where
    Discord will not delete it, edit it to a line that names no one's request. Raises when
    it cannot be looked at or the edit fails (a message already gone is no failure)."""
    try:
        original = await interaction.original_response()
    except discord.NotFound:
        return  # already gone: the followup will be a new message
    except discord.ClientException:  # its channel is unknown to discord.py: leave it
        return
    if original.flags.ephemeral or not original.flags.loading:
        return
    try:
        await interaction.delete_original_response()
        return
    except discord.NotFound:
        return  # already gone
    except discord.HTTPException as exc:
        log.warning("could not delete the thinking message of %s: %s", _describe(interaction), exc)
    # Edited to a line that names no one's request, it is no longer the placeholder either.
    try:
        await interaction.edit_original_response(content="This request was not started.")
    except discord.NotFound:
        return  # deleted meanwhile


def _describe(interaction: discord.Interaction) -> str:
    command = interaction.command.qualified_name if interaction.command else None
    data: dict[str, object] = dict(interaction.data or {})
    custom_id = data.get("custom_id")
    return f"/{command}" if command else f"component {custom_id!r}"
