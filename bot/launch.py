"""Starting a job from an interaction: acknowledge in time, post progress, follow it.

Shared by /imagine, the result buttons and the remix modal, so every way in
obeys the same 3-second deadline and gets the same progress message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import discord

from bot import render
from bot.errors import reply_error
from bot.service import Accepted, Lineage, Origin, Requester
from generation.jobs import Phase, Progress
from generation.prompt import truncation_warning
from generation.request import GenerationRequest

if TYPE_CHECKING:
    from bot.client import SdBot

log = logging.getLogger(__name__)

ACK_WITHIN = 2.0  # defer if accepting takes longer than this (Discord allows 3 s)


def requester(interaction: discord.Interaction) -> Requester:
    """The plain facts of who is asking and where."""
    user = interaction.user
    roles: tuple[int, ...] = ()
    manage = False
    if isinstance(user, discord.Member):
        roles = tuple(role.id for role in user.roles)
        manage = interaction.permissions.manage_messages
    return Requester(
        user_id=user.id,
        channel_id=interaction.channel_id or 0,
        guild_id=interaction.guild_id,
        role_ids=roles,
        manage_messages=manage,
    )


def origin(interaction: discord.Interaction) -> Origin:
    return Origin(interaction.id, interaction.token, interaction.created_at.timestamp())


async def launch(
    interaction: discord.Interaction,
    request: GenerationRequest,
    lineage: Lineage,
) -> Accepted | None:
    """Accept `request` for the interaction's user and post its progress message.

    Refusals become an ephemeral reply; returns None then.
    """
    bot: SdBot = interaction.client  # type: ignore[assignment]
    who = requester(interaction)
    task = asyncio.create_task(bot.service.accept(who, request, lineage, origin(interaction)))
    deferred = await defer_if_slow(interaction, task)
    try:
        accepted = await task
    except Exception as exc:
        if not deferred:
            raise  # the one error handler answers ephemerally
        await reply_error(interaction, exc)  # takes "thinking" down; logs the unexpected
        return None
    record = accepted.record
    progress = accepted.handle.latest  # the worker's position and ETA, or a later phase
    if progress.phase is Phase.QUEUED and progress.position is None:
        position = bot.service.worker.position(str(record.id))
        progress = Progress(str(record.id), Phase.QUEUED, position=position)
    text = render.progress_text(record.id, request, progress)
    view = render.result_view(record.id, 0, finished=False)
    message_id: int | None = None
    try:
        if deferred:
            message_id = (await interaction.edit_original_response(content=text, view=view)).id
        else:
            response = await interaction.response.send_message(text, view=view)
            message_id = response.message_id or (await interaction.original_response()).id
    except discord.HTTPException as exc:
        # The job is accepted and queued: without a progress message its result goes to
        # the channel. Dropping it here would lose it until the next restart.
        log.warning("could not answer for job %s (%s); it will post in the channel", record.id, exc)
    finally:
        view.stop()
    if message_id is not None:
        await bot.storage.jobs.set_progress_message(record.id, message_id)
    bot.delivery.attachment_limits[record.id] = interaction.filesize_limit
    bot.delivery.follow(record, accepted.handle, request, text if message_id else None)
    tokenizer = bot.service.worker.tokenizer(request.model)  # None until the model is loaded
    warning = truncation_warning(tokenizer, request.prompt) if tokenizer is not None else None
    if warning:
        await _quiet_followup(interaction, f"⚠️ {warning}")
    return accepted


async def defer_if_slow(interaction: discord.Interaction, task: asyncio.Future[Any]) -> bool:
    """Defer (publicly, "thinking") unless `task` ends before the acknowledgement budget,
    counted from the interaction's creation. True if the interaction is deferred.

    A refusal after this defer stays private: `reply_error` takes the "thinking" down first.
    """
    if not interaction.response.is_done():
        age = (discord.utils.utcnow() - interaction.created_at).total_seconds()
        done, _ = await asyncio.wait({task}, timeout=max(0.0, ACK_WITHIN - age))
        if done:
            return False
        try:
            await interaction.response.defer(thinking=True)
        except discord.HTTPException as exc:  # too late (10062): the caller goes on
            log.warning("could not defer interaction %s: %s", interaction.id, exc)
    return interaction.response.is_done()


async def _quiet_followup(interaction: discord.Interaction, text: str) -> None:
    try:
        await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException as exc:
        log.info("could not send a followup: %s", exc)
