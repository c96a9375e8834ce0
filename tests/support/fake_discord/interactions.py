"""Interaction records: what a test awaits after a user acts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .messages import FakeMessage, StoredFile
from .waiting import Notifier
from .world import FakeChannel, FakeUser

# Interaction types.
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
AUTOCOMPLETE = 4
MODAL_SUBMIT = 5

# Callback (response) types.
PONG = 1
CHANNEL_MESSAGE = 4
DEFERRED_CHANNEL_MESSAGE = 5
DEFERRED_UPDATE_MESSAGE = 6
UPDATE_MESSAGE = 7
AUTOCOMPLETE_RESULT = 8
MODAL = 9

# Application command option types.
SUB_COMMAND = 1
SUB_COMMAND_GROUP = 2
STRING = 3
INTEGER = 4
BOOLEAN = 5
USER = 6
CHANNEL = 7
ROLE = 8
MENTIONABLE = 9
NUMBER = 10
ATTACHMENT = 11


@dataclass(frozen=True)
class RejectedRequest:
    """An error the fake answered to a request about an interaction."""

    method: str
    path: str
    status: int
    code: int
    message: str


@dataclass(eq=False)
class InteractionRecord:
    """One dispatched interaction and everything the bot did with it.

    `message` is the interaction's original response (`@original`): the message created by a
    type 4/5 callback, or for type 6/7 the component's message. `followups` are the other
    messages sent with the token. `errors` lists every request the fake rejected for it
    (late callback 10062, double ack 40060, expired token 50027, ...).
    """

    id: int
    token: str
    type: int
    user: FakeUser
    channel: FakeChannel
    payload: dict[str, Any]
    dispatched_at: float
    notifier: Notifier = field(repr=False)
    source_message: FakeMessage | None = None
    response_type: int | None = None
    response_data: dict[str, Any] = field(default_factory=dict)
    responded_at: float | None = None
    message: FakeMessage | None = None
    followups: list[FakeMessage] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    choices: list[dict[str, Any]] | None = None
    errors: list[RejectedRequest] = field(default_factory=list)

    @property
    def guild_id(self) -> int | None:
        return self.channel.guild_id

    @property
    def flags(self) -> int:
        """The response's flags (64 = ephemeral): the message's, else the callback data's."""
        if self.message is not None:
            return self.message.flags
        return int(self.response_data.get("flags") or 0)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)

    @property
    def deferred(self) -> bool:
        return self.response_type in (DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE)

    @property
    def content(self) -> str:
        return self.message.content if self.message else ""

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.message.embeds if self.message else []

    @property
    def components(self) -> list[dict[str, Any]]:
        return self.message.components if self.message else []

    @property
    def attachments(self) -> list[StoredFile]:
        return self.message.attachments if self.message else []

    def owns(self, message: FakeMessage) -> bool:
        """Whether `message` was written with this interaction's token."""
        return message is self.message or any(m is message for m in self.followups)

    async def wait_response(self, timeout: float = 5.0) -> InteractionRecord:  # noqa: ASYNC109
        """Wait for the (first, accepted) callback; returns self."""
        await self.notifier.wait_until(
            lambda: self.response_type is not None, timeout, f"a response to interaction {self.id}"
        )
        return self

    async def wait_message(
        self,
        predicate: Callable[[FakeMessage], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> FakeMessage:
        """Wait until `@original` exists (and satisfies `predicate`), e.g. `not m.loading`."""

        def ready() -> FakeMessage | None:
            message = self.message
            if message is not None and (predicate is None or predicate(message)):
                return message
            return None

        return await self.notifier.wait_until(ready, timeout, f"interaction {self.id}'s message")

    async def wait_followup(self, count: int = 1, timeout: float = 5.0) -> FakeMessage:  # noqa: ASYNC109
        """Wait for the `count`-th followup message and return it."""
        await self.notifier.wait_until(
            lambda: len(self.followups) >= count, timeout, f"{count} followup(s) to {self.id}"
        )
        return self.followups[count - 1]

    async def wait_error(self, timeout: float = 5.0) -> RejectedRequest:  # noqa: ASYNC109
        """Wait for the first rejected request about this interaction."""
        await self.notifier.wait_until(
            lambda: self.errors, timeout, f"a rejected request for interaction {self.id}"
        )
        return self.errors[0]
