"""Running a real discord.py client against a `FakeDiscord`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

import discord
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.endpoints import apply_endpoints

from .server import FakeDiscord

ClientT = TypeVar("ClientT", bound=discord.Client)


@contextlib.contextmanager
def discord_endpoints(fake: FakeDiscord) -> Iterator[None]:
    """Point discord.py at `fake` (via `bot.endpoints.apply_endpoints`), then restore."""
    saved_base, saved_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    apply_endpoints(fake.api_url, fake.gateway_url)
    try:
        yield
    finally:
        apply_endpoints(None, None)
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved_base, saved_gateway


@contextlib.asynccontextmanager
async def run_client(
    client: ClientT, fake: FakeDiscord, *, ready_timeout: float = 10.0
) -> AsyncIterator[ClientT]:
    """Start `client` against `fake` in a background task, yield once it is ready, close it.

    Create the client with a small `guild_ready_timeout` (e.g. 0.1): discord.py waits that
    long after the last GUILD_CREATE before `on_ready`. If the client task fails (bad token,
    an exception in `setup_hook`...), its exception is raised here.
    """
    with discord_endpoints(fake):
        task = asyncio.create_task(client.start(fake.token), name="fake-discord-client")
        try:
            await _wait_ready(client, fake, task, ready_timeout)
            yield client
        finally:
            await client.close()
            await _finish(task)


async def _wait_ready(
    client: discord.Client, fake: FakeDiscord, task: asyncio.Task[None], limit: float
) -> None:
    # wait_until_ready() needs login() to have run; IDENTIFY proves it has.
    await fake.wait_until(
        lambda: fake.identify_count > 0 or task.done(), limit, "the client to IDENTIFY"
    )
    if task.done():
        task.result()
        raise RuntimeError("the client stopped before it was ready")
    ready = asyncio.create_task(client.wait_until_ready())
    done, _ = await asyncio.wait({ready, task}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        ready.cancel()
        if task in done:
            task.result()
        raise TimeoutError(f"the client was not ready within {limit} s")


async def _finish(task: asyncio.Task[None]) -> None:
    try:
        await asyncio.wait_for(task, timeout=5.0)
    except asyncio.CancelledError:
        pass
    except TimeoutError:
        task.cancel()
