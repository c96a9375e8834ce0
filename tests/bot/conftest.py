"""Fixtures for bot tests: the real SdBot, real storage and worker, against a FakeDiscord.

`start_bot()` runs one SdBot; `env.stop()` shuts it down the way `sdbot run` does (stop the
worker, let deliveries finish, close the client and the database), so a test can start a
second bot on the same data directory and the same FakeDiscord (`start_bot(fake=env.fake,
data_dir=env.data_dir)`) to check what survives a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.client import SdBot
from bot.service import JobService
from generation.models import ModelRegistry
from generation.request import Limits
from generation.worker import GenerationWorker
from storage import Storage
from tests.conftest import Faults, WorkerFactory
from tests.support.fake_discord import FakeDiscord, FakeMessage, InteractionRecord, run_client

STOP_GRACE = 20.0
RESULT_TIMEOUT = 30.0
SMALL = "--size 64x64 --steps 2 --n 1"
"""Inline flags that make the cheapest job: one 64x64 image in two steps."""


@dataclass
class BotEnv:
    """Everything a bot test touches."""

    fake: FakeDiscord
    bot: SdBot
    storage: Storage
    worker: GenerationWorker
    data_dir: Path
    _stack: contextlib.AsyncExitStack = field(repr=False)
    stopped: bool = False

    async def stop(self) -> None:
        """Shut down like `sdbot run`: worker first (unfinished jobs stay queued), then
        deliveries, the client and the database. The FakeDiscord keeps running."""
        if self.stopped:
            return
        self.stopped = True
        try:
            await self.worker.stop(grace=STOP_GRACE)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.bot.delivery.wait_idle(), STOP_GRACE)
        finally:
            await self._stack.aclose()

    async def imagine(
        self, user: str, prompt: str, channel: str = "general", **options: Any
    ) -> InteractionRecord:
        """`user` runs `/imagine prompt` (plus options) in `channel`."""
        return await self.fake.slash(user, channel, "imagine", {"prompt": prompt, **options})

    async def job_count(self) -> int:
        row = await self.storage.db.one("SELECT COUNT(*) FROM jobs")
        return int(row[0]) if row else 0

    async def result(self, job_id: int, timeout: float = RESULT_TIMEOUT) -> FakeMessage:  # noqa: ASYNC109
        """The finished message of `job_id` (its reroll button proves it is the result)."""
        marker = f"sdbot:reroll:{job_id}:0"
        return await self.fake.wait_for_message(lambda m: marker in m.custom_ids, timeout)


def job_id_of(message: FakeMessage) -> int:
    """The job number a progress or result message is about (`**#12**` or `#12` in a title)."""
    found = re.search(r"#(\d+)", message.content) or re.search(
        r"#(\d+)", " ".join(str(e.get("title", "")) for e in message.embeds)
    )
    assert found is not None, f"no job number in {message.content!r}"
    return int(found[1])


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


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The tiny model gains nothing from more threads, and on a small machine torch's spinning
    worker threads starve the event loop (the bot, the fake Discord) of CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class BotStarter:
    """`await start_bot(...)` runs an SdBot; everything it started is stopped at teardown."""

    def __init__(
        self,
        stack: contextlib.AsyncExitStack,
        tmp_path: Path,
        start_worker: WorkerFactory,
        registry: ModelRegistry,
        clock: FakeClock,
        faults: Faults,
    ) -> None:
        self._stack = stack
        self._faults = faults
        self._tmp_path = tmp_path
        self._start_worker = start_worker
        self._registry = registry
        self._clock = clock
        self.envs: list[BotEnv] = []

    async def fake(self, *, users: Sequence[str] = ()) -> FakeDiscord:
        """A running FakeDiscord on the shared clock, with extra members `users`
        (add users and channels before the first bot connects)."""
        fake = await self._stack.enter_async_context(FakeDiscord(clock=self._clock))
        for name in users:
            fake.add_user(name)
        return fake

    async def __call__(
        self,
        *,
        fake: FakeDiscord | None = None,
        data_dir: Path | None = None,
        images_per_hour: int = 1000,
        images_per_day: int = 10000,
        limits: Limits | None = None,
        progress_interval: float = 0.2,
        worker: GenerationWorker | None = None,
        redelivery_interval: float = 300.0,
        **worker_options: Any,
    ) -> BotEnv:
        if fake is None:
            fake = await self.fake()
        data_dir = data_dir or self._tmp_path / "data"
        stack = contextlib.AsyncExitStack()
        try:
            storage = await Storage.open(
                data_dir,
                images_per_hour=images_per_hour,
                images_per_day=images_per_day,
                clock=self._clock,
            )
            stack.push_async_callback(storage.close)
            if worker is None:
                worker = await self._start_worker(**worker_options)
            service = JobService(storage, worker, self._registry, limits or Limits())
            bot = SdBot(
                storage=storage,
                service=service,
                registry=self._registry,
                progress_interval=progress_interval,
                dev_guild_id=fake.guild.id,
                clock=self._clock,
                redelivery_interval=redelivery_interval,
                guild_ready_timeout=0.05,
            )
            await stack.enter_async_context(run_client(bot, fake))
        except BaseException:
            await stack.aclose()
            raise
        env = BotEnv(fake, bot, storage, worker, data_dir, stack)
        self.envs.append(env)
        return env

    async def stop_all(self) -> None:
        self._faults.release_all()  # a held GPU thread would stall the worker's shutdown
        for env in reversed(self.envs):
            await env.stop()


@pytest.fixture
async def start_bot(
    tmp_path: Path,
    start_worker: WorkerFactory,
    tiny_registry: ModelRegistry,
    clock: FakeClock,
    faults: Faults,
) -> AsyncIterator[BotStarter]:
    """`env = await start_bot()` runs SdBot against a fresh FakeDiscord."""
    async with contextlib.AsyncExitStack() as stack:
        starter = BotStarter(stack, tmp_path, start_worker, tiny_registry, clock, faults)
        try:
            yield starter
        finally:
            await starter.stop_all()
