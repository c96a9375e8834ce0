"""Channel routes used with the bot token: send, edit, fetch and delete messages; typing;
and `GET /attachments/{id}/{filename}`, which serves stored files like Discord's CDN.
"""

from __future__ import annotations

from aiohttp import web

from . import errors as err
from .errors import json_response
from .messages import REPLY, FakeMessage, read_body
from .rest import API_PREFIX, snowflake_arg
from .state import FakeState
from .world import FakeChannel, Perm


class ChannelRoutes:
    """`/channels/{id}` and its messages, as a bot with its token sees them."""

    def __init__(self, state: FakeState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        channel = API_PREFIX + "/channels/{channel_id}"
        message = channel + "/messages/{message_id}"
        return [
            web.get(channel, self.get_channel),
            web.post(channel + "/typing", self.typing),
            web.get(channel + "/messages", self.history),
            web.post(channel + "/messages", self.send),
            web.get(message, self.get_message),
            web.patch(message, self.edit),
            web.delete(message, self.delete),
            web.get("/attachments/{file_id}/{filename}", self.attachment),
        ]

    def _channel(self, request: web.Request) -> FakeChannel:
        channel = self.state.world.channels.get(snowflake_arg(request, "channel_id"))
        if channel is None:
            raise err.unknown_channel()
        return channel

    def _writable(self, request: web.Request) -> FakeChannel:
        """The channel, if the bot may send there (403 50013 / 50007 otherwise)."""
        channel = self._channel(request)
        if channel.forbidden:
            raise err.missing_permissions()
        recipient = channel.recipient
        if recipient is not None and recipient.id in self.state.world.dm_blocked:
            raise err.cannot_dm_user()
        return channel

    def _message(self, channel: FakeChannel, request: web.Request) -> FakeMessage:
        """A visible message of the channel; ephemeral ones exist only for their webhook."""
        message = self.state.messages.get(snowflake_arg(request, "message_id"))
        if message is None or message.channel_id != channel.id or message.deleted:
            raise err.unknown_message()
        if message.ephemeral:
            raise err.unknown_message()
        return message

    async def get_channel(self, request: web.Request) -> web.Response:
        return json_response(self._channel(request).payload(self.state.world.bot.id))

    async def typing(self, request: web.Request) -> web.Response:
        self._writable(request)
        return web.Response(status=204)

    async def history(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel.forbidden:
            raise err.missing_access()
        messages = [
            m for m in self.state.channel_messages(channel.id) if not m.deleted and not m.ephemeral
        ]
        before, after = request.query.get("before"), request.query.get("after")
        if before:
            messages = [m for m in messages if m.id < int(before)]
        if after:
            messages = [m for m in messages if m.id > int(after)]
        limit = int(request.query.get("limit", "50"))
        newest_first = sorted(messages, key=lambda m: m.id, reverse=True)
        return json_response([m.payload() for m in newest_first[:limit]])

    async def get_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel.forbidden:
            raise err.missing_access()
        return json_response(self._message(channel, request).payload())

    async def send(self, request: web.Request) -> web.Response:
        channel = self._writable(request)
        body = await read_body(request)
        self.state.writer.validate(body.payload, body.uploads, creating=True)
        reference = body.payload.get("message_reference")
        message = self.state.new_message(
            channel,
            self.state.world.bot,
            type=REPLY if reference else 0,
            message_reference=reference,
        )
        self.state.writer.apply(message, body.payload, body.uploads, creating=True)
        await self.state.publish(message)
        return json_response(message.payload())

    async def edit(self, request: web.Request) -> web.Response:
        channel = self._writable(request)
        message = self._message(channel, request)
        if message.author.id != self.state.world.bot.id:
            raise err.cannot_edit_others()
        body = await read_body(request)
        self.state.writer.validate(body.payload, body.uploads, creating=False)
        self.state.writer.apply(message, body.payload, body.uploads, creating=False)
        await self.state.edited(message)
        return json_response(message.payload())

    async def delete(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._message(channel, request)
        world = self.state.world
        may_manage = world.permissions_in(world.bot, channel) & Perm.MANAGE_MESSAGES
        if channel.forbidden or (message.author.id != world.bot.id and not may_manage):
            raise err.missing_permissions()
        await self.state.delete(message)
        return web.Response(status=204)

    async def attachment(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        stored = self.state.writer.files.get(int(file_id)) if file_id.isdigit() else None
        if stored is None or stored.filename != request.match_info["filename"]:
            return web.Response(status=404, text="404: Not Found")
        return web.Response(body=stored.data, headers={"Content-Type": stored.content_type})
