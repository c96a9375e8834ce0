"""Fixtures for bot tests: the real SdBot, real storage and worker, against a FakeDiscord."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.client import SdBot
from bot.service import JobService
from generation.request import Limits
from generation.worker import GenerationWorker
from storage import Storage
from tests.conftest import WorkerFactory
from tests.support.fake_discord import FakeDiscord, run_client


@dataclass
class BotEnv:
    """Everything a bot test touches."""

    fake: FakeDiscord
    bot: SdBot
    storage: Storage
    worker: GenerationWorker
    data_dir: Path


class FakeClock:
    """Wall clock plus an offset the test can move (shared by the fake and the bot)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


BotStarter = Callable[..., Any]


@pytest.fixture
async def start_bot(
    tmp_path: Path, start_worker: WorkerFactory, tiny_registry: Any, clock: FakeClock
) -> AsyncIterator[BotStarter]:
    """`async with start_bot() as env:` runs SdBot against a fresh FakeDiscord."""
    import contextlib

    stack = contextlib.AsyncExitStack()

    async def start(
        *,
        fake: FakeDiscord | None = None,
        data_dir: Path | None = None,
        images_per_hour: int = 1000,
        images_per_day: int = 10000,
        limits: Limits | None = None,
        progress_interval: float = 0.2,
        worker: GenerationWorker | None = None,
        **worker_options: Any,
    ) -> BotEnv:
        if fake is None:
            fake = await stack.enter_async_context(FakeDiscord(clock=clock))
        data_dir = data_dir or tmp_path / "data"
        storage = await Storage.open(
            data_dir, images_per_hour=images_per_hour, images_per_day=images_per_day,
            clock=clock,
        )
        stack.push_async_callback(storage.close)
        if worker is None:
            worker = await start_worker(**worker_options)
        service = JobService(storage, worker, tiny_registry, limits or Limits(), clock=clock)
        bot = SdBot(
            storage=storage, service=service, registry=tiny_registry,
            progress_interval=progress_interval, dev_guild_id=fake.guild.id, clock=clock,
            guild_ready_timeout=0.05,
        )
        await stack.enter_async_context(run_client(bot, fake))
        return BotEnv(fake, bot, storage, worker, data_dir)

    yield start
    await stack.aclose()
