"""Builds INTERACTION_CREATE payloads the way Discord's client would and dispatches them."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from .interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    InteractionRecord,
)
from .limits import BUTTON, STRING_SELECT
from .messages import FakeMessage
from .options import OptionBuilder, modal_submission
from .state import FakeState
from .world import FakeChannel, FakeUser

# Interaction contexts.
GUILD_CONTEXT = 0
BOT_DM_CONTEXT = 1


class InteractionDispatcher:
    """Turns a user's action into an interaction: payload, record, gateway dispatch."""

    def __init__(self, state: FakeState) -> None:
        self.state = state

    def find_command(self, name: str, channel: FakeChannel) -> dict[str, Any]:
        """The registered command a user in `channel` would invoke (guild scope first)."""
        scopes: list[int | None] = [] if channel.is_dm else [channel.guild_id]
        scopes.append(None)
        for scope in scopes:
            command = self.state.commands.get(scope, {}).get(name)
            if command is not None and command.get("type", 1) == 1:
                return command
        registered = {scope: sorted(c) for scope, c in self.state.commands.items()}
        raise LookupError(
            f"/{name} is not registered where {channel.name!r} can see it (did the bot "
            f"sync its command tree?); registered by scope: {registered}"
        )

    async def slash(
        self,
        user: FakeUser,
        channel: FakeChannel,
        name: str,
        options: Mapping[str, Any],
        *,
        focused: str | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """`/name [sub [subsub]] options...`; `focused` makes it an autocomplete request."""
        command_name, *path = name.split()
        command = self.find_command(command_name, channel)
        builder = OptionBuilder(self.state.world, channel)
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command_name,
            "type": 1,
            "options": builder.build(command, path, options, focused),
        }
        if builder.resolved:
            data["resolved"] = builder.resolved
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        kind = AUTOCOMPLETE if focused else APPLICATION_COMMAND
        return await self.dispatch(kind, user, channel, data, locale=locale)

    async def component(
        self,
        user: FakeUser,
        message: FakeMessage,
        custom_id: str,
        values: Sequence[str] | None = None,
    ) -> InteractionRecord:
        """A click on a button, or a choice in a select menu (`values`)."""
        if message.deleted:
            raise LookupError(f"message {message.id} was deleted; nothing to click")
        component = message.component(custom_id)
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled; Discord would not send it")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if "id" in component:
            data["id"] = component["id"]
        if component["type"] == BUTTON and values is not None:
            raise ValueError(f"{custom_id!r} is a button: it takes no values")
        if component["type"] != BUTTON:
            data["values"] = self._select_values(component, list(values or []))
        channel = self.state.world.channel(message.channel_id)
        return await self.dispatch(MESSAGE_COMPONENT, user, channel, data, source=message)

    def _select_values(self, component: dict[str, Any], values: list[str]) -> list[str]:
        low, high = component.get("min_values", 1), component.get("max_values", 1)
        if not low <= len(values) <= high:
            raise ValueError(f"select {component['custom_id']!r} takes {low}-{high} values")
        if component["type"] == STRING_SELECT:
            offered = {o["value"] for o in component.get("options") or []}
            if not set(values) <= offered:
                raise ValueError(f"{sorted(set(values) - offered)} are not options of the select")
        return values

    async def modal_submit(
        self,
        user: FakeUser,
        channel: FakeChannel,
        modal: dict[str, Any],
        values: Mapping[str, Any],
        source: FakeMessage | None,
    ) -> InteractionRecord:
        data = {
            "custom_id": modal["custom_id"],
            "components": modal_submission(modal, values),
        }
        return await self.dispatch(MODAL_SUBMIT, user, channel, data, source=source)

    async def dispatch(
        self,
        kind: int,
        user: FakeUser,
        channel: FakeChannel,
        data: dict[str, Any],
        *,
        source: FakeMessage | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """Record and send one INTERACTION_CREATE; the 3 s deadline starts now."""
        state = self.state
        ident = state.snowflake()
        token = f"aW50ZXJhY3Rpb246{ident}{secrets.token_urlsafe(48)}"
        payload = self._payload(ident, token, kind, user, channel, data, source, locale)
        record = InteractionRecord(
            ident,
            token,
            kind,
            user,
            channel,
            payload,
            state.now(),
            state.notifier,
            source_message=source,
        )
        state.interactions[ident] = record
        await state.gateway.dispatch("INTERACTION_CREATE", payload)
        state.notifier.notify()
        return record

    def _payload(
        self,
        ident: int,
        token: str,
        kind: int,
        user: FakeUser,
        channel: FakeChannel,
        data: dict[str, Any],
        source: FakeMessage | None,
        locale: str,
    ) -> dict[str, Any]:
        world = self.state.world
        payload: dict[str, Any] = {
            "id": str(ident),
            "application_id": str(self.state.application_id),
            "type": kind,
            "data": data,
            "channel_id": str(channel.id),
            "channel": {
                **channel.payload(world.bot.id),
                "permissions": str(world.permissions_in(user, channel)),
            },
            "token": token,
            "version": 1,
            "locale": locale,
            "app_permissions": str(world.permissions_in(world.bot, channel)),
            "entitlements": [],
            "attachment_size_limit": self.state.attachment_size_limit,
        }
        if source is not None:
            payload["message"] = source.payload()
        member = world.member(user)
        if channel.is_dm or member is None:
            payload["user"] = user.payload()
            payload["context"] = BOT_DM_CONTEXT
            payload["authorizing_integration_owners"] = {"0": str(world.guild.id)}
        else:
            payload["guild_id"] = str(world.guild.id)
            payload["guild"] = {"id": str(world.guild.id), "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            payload["member"] = member.payload(world.permissions_in(user, channel))
            payload["context"] = GUILD_CONTEXT
            payload["authorizing_integration_owners"] = {"0": str(world.guild.id)}
        return payload
