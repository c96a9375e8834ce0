"""`FakeDiscord`: the loopback server and the API tests drive it with."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from .dispatcher import InteractionDispatcher
from .interactions import InteractionRecord
from .messages import FakeMessage, StoredFile
from .rest import API_PREFIX, RestApi
from .rest_interactions import InteractionRoutes
from .rest_messages import ChannelRoutes
from .state import FakeState
from .traffic import Fault, RecordedRequest
from .world import FakeChannel, FakeGuild, FakeRole, FakeUser, World

T = TypeVar("T")

UserRef = FakeUser | str | int
ChannelRef = FakeChannel | str | int
MAX_BODY = 512 * 1024 * 1024


class FakeDiscord:
    """Discord's REST API and gateway on 127.0.0.1, for the real discord.py client.

    Use as `async with FakeDiscord() as fake:`; point discord.py at it with
    `discord_endpoints(fake)` or `run_client(client, fake)` (see `harness`).
    """

    def __init__(
        self, *, token: str = "fake-bot-token", clock: Callable[[], float] | None = None
    ) -> None:
        self.state = FakeState(token, clock)
        self._dispatcher = InteractionDispatcher(self.state)
        self._runner: web.AppRunner | None = None
        self._port = 0

    # Lifecycle

    async def start(self) -> FakeDiscord:
        rest = RestApi(self.state)
        app = web.Application(middlewares=[rest.middleware], client_max_size=MAX_BODY)
        app.add_routes(rest.routes())
        app.add_routes(ChannelRoutes(self.state).routes())
        app.add_routes(InteractionRoutes(self.state).routes())
        app.router.add_get("/gateway", self.state.gateway.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self.state.base_url = f"http://127.0.0.1:{self._port}"
        self.state.gateway.url = self.gateway_url
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self.state.gateway.close()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return self.state.base_url

    @property
    def api_url(self) -> str:
        """For `discord.http.Route.BASE`: `http://127.0.0.1:PORT/api/v10`."""
        return self.state.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """For `DiscordWebSocket.DEFAULT_GATEWAY`: `ws://127.0.0.1:PORT/gateway`."""
        return f"ws://127.0.0.1:{self._port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        """What READY's `resume_gateway_url` and `GET /gateway/bot` announce (default: ours)."""
        return self.state.gateway.url

    @resume_gateway_url.setter
    def resume_gateway_url(self, value: str) -> None:
        self.state.gateway.url = value

    @property
    def token(self) -> str:
        """The bot token the fake accepts (REST `Authorization: Bot ...` and IDENTIFY)."""
        return self.state.token

    @property
    def application_id(self) -> int:
        return self.state.application_id

    # Rules and clock

    @property
    def attachment_size_limit(self) -> int:
        """Per-file upload limit (default 10 MiB); bigger files get 413 code 40005."""
        return self.state.attachment_size_limit

    @attachment_size_limit.setter
    def attachment_size_limit(self, value: int) -> None:
        self.state.attachment_size_limit = value

    def clock(self) -> float:
        """The fake clock (seconds) that deadlines, token life and request times use."""
        return self.state.now()

    def advance(self, seconds: float) -> None:
        """Move the fake clock forward, e.g. `advance(15 * 60)` to expire tokens."""
        self.state.advance(seconds)

    # World

    @property
    def world(self) -> World:
        return self.state.world

    @property
    def guild(self) -> FakeGuild:
        return self.state.world.guild

    @property
    def bot_user(self) -> FakeUser:
        return self.state.world.bot

    def user(self, key: UserRef) -> FakeUser:
        """`owner`, `admin` (Manage Server), `mod` (Manage Messages), `alice`, `bob`, ..."""
        return self.state.world.user(key)

    def channel(self, key: ChannelRef) -> FakeChannel:
        """`general`, `art`, `nsfw-art` (age-restricted), `showcase`, ... or DM channels."""
        return self.state.world.channel(key)

    def role(self, name: str) -> FakeRole:
        for role in self.guild.roles.values():
            if role.name == name:
                return role
        raise KeyError(f"no role {name!r}")

    def add_user(self, name: str, *, roles: Sequence[str] = (), member: bool = True) -> FakeUser:
        """Add a user (before the client connects, to appear in GUILD_CREATE)."""
        return self.world.add_user(name, roles=[self.role(r) for r in roles], member=member)

    def add_channel(self, name: str, *, nsfw: bool = False) -> FakeChannel:
        """Add a text channel (before the client connects, to appear in GUILD_CREATE)."""
        return self.world.add_channel(name, nsfw=nsfw)

    def dm_channel(self, user: UserRef) -> FakeChannel:
        return self.world.dm_channel(self.user(user))

    async def forbid_channel(self, channel: ChannelRef, forbidden: bool = True) -> None:
        """Deny the bot View/Send in `channel`: bot-token sends/edits get 403 50013.

        Interaction responses there still work, as on Discord. Connected clients get a
        CHANNEL_UPDATE carrying the new permission overwrite.
        """
        target = self.channel(channel)
        target.forbidden = forbidden
        if self.state.gateway.live_sessions and not target.is_dm:
            await self.dispatch("CHANNEL_UPDATE", target.payload(self.bot_user.id))

    def block_dms(self, user: UserRef) -> None:
        """The user does not accept DMs: bot sends to their DM channel get 403 50007."""
        self.world.dm_blocked.add(self.user(user).id)

    def upload(
        self, data: bytes, filename: str = "image.png", content_type: str | None = None
    ) -> StoredFile:
        """A file a user attaches to a slash command (pass it as an attachment option)."""
        return self.state.writer.store_file(filename, data, content_type)

    # What the bot did

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every REST request, in order (method, path under /api/v10, time, status...)."""
        return self.state.requests

    def requests_to(self, pattern: str) -> list[RecordedRequest]:
        """Requests matching `"PATCH /channels/.*/messages"` or a bare path regex."""
        return [r for r in self.state.requests if r.matches(pattern)]

    @property
    def unhandled_requests(self) -> list[RecordedRequest]:
        """Requests to routes the fake does not implement (answered 404)."""
        return self.state.unhandled

    @property
    def interactions(self) -> list[InteractionRecord]:
        return list(self.state.interactions.values())

    def messages(self, channel: ChannelRef, *, include_deleted: bool = False) -> list[FakeMessage]:
        """Messages of a channel, oldest first (ephemeral ones included; see `.ephemeral`)."""
        channel_id = self.channel(channel).id
        found = self.state.channel_messages(channel_id)
        return [m for m in found if include_deleted or not m.deleted]

    def dm_messages(self, user: UserRef) -> list[FakeMessage]:
        return self.messages(self.dm_channel(user))

    def message(self, message_id: int) -> FakeMessage:
        return self.state.messages[message_id]

    def commands(self, guild: FakeGuild | int | None = None) -> dict[str, dict[str, Any]]:
        """Registered commands by name: global (`guild=None`) or for a guild."""
        guild_id = guild.id if isinstance(guild, FakeGuild) else guild
        return dict(self.state.commands.get(guild_id, {}))

    # Waiting

    async def wait_until(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 5.0,  # noqa: ASYNC109
        what: str = "condition",
    ) -> T:
        """Wait for `predicate()` to be truthy; it is re-checked after every state change."""
        return await self.state.notifier.wait_until(predicate, timeout, what)

    async def wait_for_message(
        self,
        predicate: Callable[[FakeMessage], bool],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> FakeMessage:
        """The first stored message (new or edited, not deleted) satisfying `predicate`."""

        def find() -> FakeMessage | None:
            for message in self.state.messages.values():
                if not message.deleted and predicate(message):
                    return message
            return None

        return await self.wait_until(find, timeout, "a matching message")

    # Gateway

    @property
    def identify_count(self) -> int:
        return self.state.gateway.identify_count

    @property
    def resume_count(self) -> int:
        return self.state.gateway.resume_count

    @property
    def gateway_connected(self) -> bool:
        return self.state.gateway.connected

    @property
    def gateway_frames(self) -> list[dict[str, Any]]:
        """Every frame clients sent on the gateway (heartbeats, IDENTIFY, RESUME, ...)."""
        return self.state.gateway.received

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send any gateway DISPATCH event (e.g. "GUILD_ROLE_UPDATE") to connected clients."""
        await self.state.gateway.dispatch(event, data)

    async def disconnect_gateway(self, code: int = 4000) -> None:
        """Drop the client's websocket; with a resumable code it reconnects and RESUMEs."""
        await self.state.gateway.disconnect(code)

    async def request_reconnect(self) -> None:
        await self.state.gateway.request_reconnect()

    async def invalidate_session(self, resumable: bool = False) -> None:
        await self.state.gateway.invalidate_sessions(resumable)

    # Faults

    def fail_next(
        self,
        pattern: str,
        status: int = 500,
        times: int = 1,
        *,
        retry_after: float = 0.05,
        is_global: bool = False,
        via: bool = True,
        code: int = 0,
        message: str | None = None,
    ) -> Fault:
        """Answer the next `times` requests matching `pattern` with `status`.

        `pattern` is `"METHOD /path-regex"` or a bare path regex, matched against the path
        under /api/v10, e.g. `"POST /webhooks/"` or `"PATCH /channels/\\d+/messages/"`.
        A 429 carries `Via: 1.1 google`, X-RateLimit-* headers and `retry_after`, so
        discord.py sleeps and retries (`via=False` mimics a Cloudflare ban: it raises).
        discord.py's bot-token client retries 500/502/504 (not 503); webhooks retry any 5xx.
        """
        fault = Fault(pattern, status, times, retry_after, is_global, via, code, message)
        self.state.faults.append(fault)
        return fault

    # Users acting

    async def slash(
        self,
        user: UserRef,
        channel: ChannelRef,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        attachments: Mapping[str, StoredFile] | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """`user` runs `/name` in `channel`; `name` may hold subcommands ("config showcase").

        Option types come from the registered command; attachment options take
        `fake.upload(...)` results (in `options` or `attachments`).
        """
        values = {**(options or {}), **(attachments or {})}
        return await self._dispatcher.slash(
            self.user(user), self.channel(channel), name, values, locale=locale
        )

    async def autocomplete(
        self,
        user: UserRef,
        channel: ChannelRef,
        name: str,
        options: Mapping[str, Any],
        focused: str,
    ) -> InteractionRecord:
        """`user` is typing option `focused`; the bot's choices land in `record.choices`."""
        return await self._dispatcher.slash(
            self.user(user), self.channel(channel), name, options, focused=focused
        )

    async def delete_message(self, message: FakeMessage) -> None:
        """A member with Manage Messages deletes `message` (any public one, a bot's "thinking"
        interaction response too): clients get MESSAGE_DELETE, and from then on the token's
        `@original` answers 404 10008 and a followup is a new message, as on Discord."""
        assert not message.ephemeral, "members cannot delete another's ephemeral message"
        await self.state.delete(message)

    async def click(self, user: UserRef, message: FakeMessage, custom_id: str) -> InteractionRecord:
        """`user` clicks the button `custom_id` on `message`."""
        return await self._dispatcher.component(self.user(user), message, custom_id)

    async def select(
        self, user: UserRef, message: FakeMessage, custom_id: str, values: Sequence[str]
    ) -> InteractionRecord:
        """`user` picks `values` in the select menu `custom_id` on `message`."""
        return await self._dispatcher.component(self.user(user), message, custom_id, values)

    async def submit_modal(
        self,
        user: UserRef,
        source: FakeMessage | FakeChannel | InteractionRecord,
        custom_id: str | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> InteractionRecord:
        """`user` submits the modal `custom_id` with `{field custom_id: value}`.

        `source` is the interaction that opened the modal (simplest: custom_id may be
        omitted), or the message whose component opened it, or the channel of the command.
        """
        modal = self._find_modal(source, custom_id)
        if isinstance(source, InteractionRecord):
            channel, message = source.channel, source.source_message
        elif isinstance(source, FakeMessage):
            channel, message = self.channel(source.channel_id), source
        else:
            channel, message = source, None
        return await self._dispatcher.modal_submit(
            self.user(user), channel, modal, values or {}, message
        )

    def _find_modal(
        self, source: FakeMessage | FakeChannel | InteractionRecord, custom_id: str | None
    ) -> dict[str, Any]:
        if isinstance(source, InteractionRecord) and source.modal is not None:
            if custom_id in (None, source.modal.get("custom_id")):
                return source.modal
        for record in reversed(self.interactions):
            if record.modal is not None and record.modal.get("custom_id") == custom_id:
                return record.modal
        raise LookupError(f"the bot never opened a modal with custom_id {custom_id!r}")
