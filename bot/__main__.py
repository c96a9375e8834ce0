"""`sdbot run`: the entry point builds every resource and passes it in.

Order: settings (already loaded) -> database -> worker (model loaded) -> client,
which re-queues unfinished jobs and syncs commands in `setup_hook`. SIGTERM and
SIGINT stop it gracefully: stop accepting, interrupt the running batch (its jobs
stay queued in SQLite for the next start), close the client and the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import discord

from bot.assembly import make_registry, make_worker
from bot.client import SdBot
from bot.endpoints import apply_endpoints
from bot.housekeeping import keep_tidy
from bot.invite import MISSING_TOKEN, invite_url
from bot.service import JobService
from bot.settings import Settings
from storage import Storage
from storage.errors import StorageError

log = logging.getLogger("sdbot")

SHUTDOWN_GRACE = 10.0


def run_bot(settings: Settings) -> int:
    """Run until stopped; the exit code says how it ended."""
    if settings.discord_token is None:
        print(MISSING_TOKEN, file=sys.stderr)
        return 2
    try:
        apply_endpoints(settings.discord_api_url, settings.discord_gateway_url)
    except ValueError as exc:
        print(f"sdbot: bad setting: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(settings))


async def serve(settings: Settings) -> int:
    assert settings.discord_token is not None
    # Before the database: a bad model entry (a pickle) raises here, and an open
    # database would keep its thread, and so the process, alive.
    registry = make_registry(settings)
    worker = make_worker(settings, registry)
    try:
        storage = await Storage.open(
            settings.data_dir,
            images_per_hour=settings.images_per_hour,
            images_per_day=settings.images_per_day,
        )
    except StorageError as exc:
        print(
            f"sdbot: cannot open the data directory: {exc}\n"
            f"sdbot: check that SDBOT_DATA_DIR ({settings.data_dir}) is a folder this user "
            "can write and that its disk has free space",
            file=sys.stderr,
        )
        return 3
    bot: SdBot | None = None
    tidy: asyncio.Task[None] | None = None
    try:
        log.info("loading the default model %s", registry.default.name)
        await worker.start(preload=registry.default.name)
        tidy = asyncio.create_task(
            keep_tidy(
                storage, retention_days=settings.retention_days, max_image_gb=settings.max_image_gb
            ),
            name="housekeeping",
        )
        service = JobService(storage, worker, registry, settings.limits)
        bot = SdBot(
            storage=storage,
            service=service,
            registry=registry,
            progress_interval=settings.progress_interval,
            dev_guild_id=settings.dev_guild_id,
        )
        return await _run_until_stopped(bot, settings.discord_token.get_secret_value())
    finally:
        if tidy is not None:
            tidy.cancel()
        unfinished = await worker.stop(grace=SHUTDOWN_GRACE)
        if bot is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(bot.delivery.wait_idle(), SHUTDOWN_GRACE)
            await bot.close()
        if unfinished:
            await storage.jobs.requeue(int(job.id) for job in unfinished)
            log.info("%d unfinished jobs stay queued for the next start", len(unfinished))
        await storage.close()
        log.info("stopped")


async def _run_until_stopped(bot: SdBot, token: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    client_task = asyncio.create_task(bot.start(token), name="discord-client")
    stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
    ready_task = asyncio.create_task(_log_invite(bot))
    await asyncio.wait({client_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    ready_task.cancel()
    stop_task.cancel()
    if client_task.done():
        exc = client_task.exception()
        if isinstance(exc, discord.LoginFailure):
            print(
                "sdbot: Discord refused the token in DISCORD_TOKEN; reset it in the "
                "developer portal and update .env",
                file=sys.stderr,
            )
            return 2
        if exc is not None:
            log.error("the Discord client stopped", exc_info=exc)
            return 1
        return 0
    log.info("stopping (signal received)")
    return 0


async def _log_invite(bot: SdBot) -> None:
    await bot.wait_until_ready()
    if bot.application_id is not None:
        log.info("invite the bot with: %s", invite_url(bot.application_id))


if __name__ == "__main__":
    from bot.cli import main

    raise SystemExit(main(["run", *sys.argv[1:]]))
