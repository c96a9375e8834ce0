"""The discord.py client: it owns the command tree and hands interactions to the services."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import discord
from discord import app_commands

from bot.delivery import Delivery
from bot.errors import reply_error
from bot.service import JobService
from generation.models import ModelRegistry
from storage import Storage

log = logging.getLogger(__name__)


class SdBot(discord.Client):
    """The bot. Every resource is built by the entry point and passed in."""

    def __init__(
        self,
        *,
        storage: Storage,
        service: JobService,
        registry: ModelRegistry,
        progress_interval: float = 1.5,
        dev_guild_id: int | None = None,
        clock: Callable[[], float] = time.time,
        redelivery_interval: float = 300.0,
        **options: object,
    ) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        # Prompts are echoed in messages: they must not ping anyone. The result message
        # opts in to pinging its requester.
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())
        super().__init__(intents=intents, **options)  # type: ignore[arg-type]
        self.storage = storage
        self.service = service
        self.registry = registry
        self.dev_guild_id = dev_guild_id
        self.clock = clock
        self.started_at = clock()  # for /info's uptime
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = self._on_tree_error  # type: ignore[method-assign]
        self.delivery = Delivery(self, storage, progress_interval=progress_interval, clock=clock)
        self.ready_once = False
        self.redelivery_interval = redelivery_interval
        self._sweeper: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        from bot.buttons import ResultButton, register_history_buttons
        from bot.commands import register_commands

        register_commands(self.tree)
        self.add_dynamic_items(ResultButton)
        register_history_buttons(self)
        if self.dev_guild_id is not None:
            guild = discord.Object(id=self.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), self.dev_guild_id)
        else:
            synced = await self.tree.sync()
            log.info(
                "synced %d global commands (Discord may take a while to show them)", len(synced)
            )
        await self.recover()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="redelivery")

    async def recover(self) -> None:
        """Re-queue jobs a crash left unfinished and post results never delivered."""
        await self.delivery.sweep()
        unfinished = await self.storage.jobs.unfinished()
        for record in unfinished:
            handle = self.service.resubmit(record)
            self.delivery.follow(record, handle, handle.job.request)
        if unfinished:
            log.info("re-queued %d unfinished jobs", len(unfinished))

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.redelivery_interval)
            try:
                await self.delivery.sweep()
            except Exception:  # a busy database, say: next round
                log.exception("the redelivery sweep failed")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await super().close()

    async def on_ready(self) -> None:
        if not self.ready_once:
            self.ready_once = True
            user = self.user
            log.info("logged in as %s (%s)", user, user.id if user else "?")

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is discord.InteractionType.modal_submit:
            from bot.buttons import submit_remix

            await submit_remix(interaction)

    async def _on_tree_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        await reply_error(interaction, error)
