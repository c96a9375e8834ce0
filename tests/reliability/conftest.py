"""Fixtures for the reliability suite: the real SdBot, storage and worker, in-process,
against a FakeDiscord whose clock the test controls."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.client import SdBot
from bot.service import JobService
from generation.request import Limits
from generation.worker import GenerationWorker
from storage import Storage
from tests.bot.conftest import FakeClock
from tests.conftest import Faults, WorkerFactory
from tests.reliability.support import lost_jobs
from tests.support.fake_discord import FakeDiscord, run_client


def new_token() -> str:
    """A bot token shaped like Discord's (id.timestamp.hmac), unique per test."""
    return f"MTA{secrets.token_urlsafe(21)}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(28)}"


@dataclass
class BotEnv:
    fake: FakeDiscord
    bot: SdBot
    storage: Storage
    worker: GenerationWorker
    data_dir: Path
    clock: FakeClock
    faults: Faults

    @property
    def db_path(self) -> Path:
        return self.data_dir / "sdbot.sqlite3"


StartBot = Callable[..., Awaitable[BotEnv]]


@pytest.fixture
async def start_bot(
    tmp_path: Path, start_worker: WorkerFactory, tiny_registry: Any, faults: Faults
) -> AsyncIterator[StartBot]:
    """`env = await start_bot(...)`: SdBot on a fresh data dir against a fresh FakeDiscord.

    At teardown every job in the database is checked against the fake (`lost_jobs`): a
    test passes only if no accepted job was lost or delivered twice.
    """
    stack = contextlib.AsyncExitStack()
    lost: list[str] = []

    async def start(
        *,
        limits: Limits | None = None,
        images_per_hour: int = 1000,
        images_per_day: int = 10000,
        busy_timeout: float = 5.0,
        progress_interval: float = 0.2,
        prepare: Callable[[FakeDiscord, Path], Awaitable[None]] | None = None,
        **worker_options: Any,
    ) -> BotEnv:
        clock = FakeClock()
        fake = await stack.enter_async_context(FakeDiscord(token=new_token(), clock=clock))
        data_dir = tmp_path / "data"
        if prepare is not None:  # e.g. leave jobs in the database, as a crash would
            await prepare(fake, data_dir)
        storage = await Storage.open(
            data_dir,
            images_per_hour=images_per_hour,
            images_per_day=images_per_day,
            clock=clock,
            busy_timeout=busy_timeout,
        )
        stack.push_async_callback(storage.close)
        worker = await start_worker(**worker_options)
        service = JobService(storage, worker, tiny_registry, limits or Limits())
        bot = SdBot(
            storage=storage,
            service=service,
            registry=tiny_registry,
            progress_interval=progress_interval,
            dev_guild_id=fake.guild.id,
            clock=clock,
            guild_ready_timeout=0.05,
        )
        await stack.enter_async_context(run_client(bot, fake))

        async def settle() -> None:  # runs before the client closes
            faults.release_all()
            await worker.stop(grace=10)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await bot.delivery.wait_idle()
            lost.extend(lost_jobs(fake, data_dir / "sdbot.sqlite3"))

        stack.push_async_callback(settle)
        return BotEnv(fake, bot, storage, worker, data_dir, clock, faults)

    yield start
    await stack.aclose()
    assert not lost, f"jobs lost or delivered twice: {lost}"
