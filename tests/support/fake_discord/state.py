"""Everything the fake knows, shared by the REST routes, the gateway and the test helpers."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .gateway import Event, Gateway, GatewaySession
from .interactions import InteractionRecord
from .messages import DEFAULT_ATTACHMENT_LIMIT, FakeMessage, MessageWriter
from .traffic import Fault, RecordedRequest
from .waiting import Notifier
from .world import FakeChannel, FakeUser, SnowflakeFactory, World

GUILD_MESSAGES_INTENT = 1 << 9
DIRECT_MESSAGES_INTENT = 1 << 12


class FakeState:
    """The world, the message store, interactions, commands, the clock and the gateway."""

    def __init__(self, token: str, clock: Callable[[], float] | None = None) -> None:
        self.token = token
        self.snowflake = SnowflakeFactory()
        self.world = World.default(self.snowflake)
        self.notifier = Notifier()
        self.base_url = ""
        self.attachment_size_limit = DEFAULT_ATTACHMENT_LIMIT
        self.interaction_deadline = 3.0
        self.token_lifetime = 15 * 60.0
        self._clock = clock or time.monotonic
        self._offset = 0.0
        self.writer = MessageWriter(
            self.snowflake, lambda: self.base_url, lambda: self.attachment_size_limit
        )
        self.messages: dict[int, FakeMessage] = {}
        self.interactions: dict[int, InteractionRecord] = {}
        self.commands: dict[int | None, dict[str, dict[str, Any]]] = {}
        self.requests: list[RecordedRequest] = []
        self.unhandled: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.gateway = Gateway(
            lambda: self.token, self.notifier, self._initial_events, self._member_chunk
        )

    @property
    def application_id(self) -> int:
        return self.world.bot.id

    # Clock

    def now(self) -> float:
        """The fake clock: the injected clock (default monotonic) plus `advance()`d seconds."""
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += seconds
        self.notifier.notify()

    def iso_now(self) -> str:
        return (datetime.now(UTC) + timedelta(seconds=self._offset)).isoformat()

    # Interactions

    def interaction_by_token(self, token: str) -> InteractionRecord | None:
        for record in self.interactions.values():
            if record.token == token:
                return record
        return None

    # Messages

    def new_message(self, channel: FakeChannel, author: FakeUser, **fields: Any) -> FakeMessage:
        """A message not yet stored: fill it, then `publish` it."""
        return FakeMessage(
            self.snowflake(), channel.id, channel.guild_id, author, self.iso_now(), **fields
        )

    def channel_messages(self, channel_id: int) -> list[FakeMessage]:
        return [m for m in self.messages.values() if m.channel_id == channel_id]

    async def publish(self, message: FakeMessage) -> None:
        self.messages[message.id] = message
        message.snapshot(self.now())
        self.notifier.notify()
        await self._message_event("MESSAGE_CREATE", message, message.payload())

    async def edited(self, message: FakeMessage) -> None:
        message.edited_timestamp = self.iso_now()
        message.snapshot(self.now())
        self.notifier.notify()
        await self._message_event("MESSAGE_UPDATE", message, message.payload())

    async def delete(self, message: FakeMessage) -> None:
        message.deleted = True
        message.deleted_at = self.now()
        self.notifier.notify()
        data = {"id": str(message.id), "channel_id": str(message.channel_id)}
        if message.guild_id is not None:
            data["guild_id"] = str(message.guild_id)
        await self._message_event("MESSAGE_DELETE", message, data)

    async def _message_event(self, event: str, message: FakeMessage, data: dict[str, Any]) -> None:
        """Tell connected clients about a message, as Discord does (never for ephemeral ones)."""
        if message.ephemeral:
            return
        intent = GUILD_MESSAGES_INTENT if message.guild_id else DIRECT_MESSAGES_INTENT
        for session in self.gateway.live_sessions:
            if session.intents & intent:
                await self.gateway.send_event(session, event, data)

    # Gateway payloads

    def _initial_events(self, session: GatewaySession) -> list[Event]:
        world = self.world
        ready: dict[str, Any] = {
            "v": 10,
            "user": world.bot.payload(),
            "guilds": [{"id": str(world.guild.id), "unavailable": True}],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway.url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "_trace": ["fake-discord"],
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        return [("READY", ready), ("GUILD_CREATE", world.guild.gateway_payload(world.bot.id))]

    def _member_chunk(self, request: dict[str, Any]) -> dict[str, Any]:
        members = self.world.guild.members.values()
        wanted = {int(u) for u in request.get("user_ids") or []}
        chosen = [m for m in members if not wanted or m.user.id in wanted]
        return {
            "guild_id": str(self.world.guild.id),
            "members": [m.payload() for m in chosen],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
            "nonce": request.get("nonce"),
        }
