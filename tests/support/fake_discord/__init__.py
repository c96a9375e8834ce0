"""A fake Discord (REST + gateway) on loopback for the real discord.py client.

    async with FakeDiscord() as fake:
        client = MyBot(intents=discord.Intents.default(), guild_ready_timeout=0.1)
        async with run_client(client, fake):
            record = await fake.slash("alice", "general", "imagine", {"prompt": "a cat"})
            await record.wait_response()

See `FakeDiscord` for the test API and `rest_interactions` for the rules it enforces.
"""

from .errors import ApiError
from .harness import discord_endpoints, run_client
from .interactions import InteractionRecord, RejectedRequest
from .messages import FakeMessage, MessageVersion, StoredFile
from .server import FakeDiscord
from .traffic import Fault, RecordedRequest
from .world import FakeChannel, FakeGuild, FakeMember, FakeRole, FakeUser, Perm

Interaction = InteractionRecord

__all__ = [
    "ApiError",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeMember",
    "FakeMessage",
    "FakeRole",
    "FakeUser",
    "Fault",
    "Interaction",
    "InteractionRecord",
    "MessageVersion",
    "Perm",
    "RecordedRequest",
    "RejectedRequest",
    "StoredFile",
    "discord_endpoints",
    "run_client",
]
