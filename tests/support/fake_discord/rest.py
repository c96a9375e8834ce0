"""REST plumbing and the simple routes: users, application, gateway, guild, commands.

`RestApi.middleware` records every request in `state.requests`, answers injected faults,
checks the bot token, and turns `ApiError`s into Discord's JSON errors.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import errors as err
from .errors import ApiError, FormErrors, json_response
from .limits import check_command, check_commands
from .messages import PAYLOAD_KEY, read_body, read_json
from .state import FakeState
from .traffic import RecordedRequest

_log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
# Interaction callbacks and webhook routes authenticate with the token in the path.
TOKEN_AUTH_PREFIXES = ("/interactions/", "/webhooks/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def snowflake_arg(request: web.Request, name: str) -> int:
    """A path parameter as an int; a non-numeric id is a 404 like Discord's."""
    try:
        return int(request.match_info[name])
    except ValueError:
        raise err.route_not_found() from None


class RestApi:
    """Middleware and the routes that are not about messages or interactions."""

    def __init__(self, state: FakeState) -> None:
        self.state = state

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        path = request.path[len(API_PREFIX) :]
        entry = RecordedRequest(request.method, path, dict(request.query), self.state.now())
        self.state.requests.append(entry)
        response = await self._answer(request, handler, entry)
        entry.status = response.status
        entry.payload = request.get(PAYLOAD_KEY)
        self.state.notifier.notify()
        return response

    async def _answer(
        self, request: web.Request, handler: Handler, entry: RecordedRequest
    ) -> web.StreamResponse:
        for fault in self.state.faults:
            if fault.take(entry):
                entry.injected = True
                return fault.response()
        try:
            if not entry.path.startswith(TOKEN_AUTH_PREFIXES):
                self._check_auth(request)
            return await handler(request)
        except ApiError as exc:
            entry.error_code = exc.code
            return exc.response()
        except web.HTTPNotFound:
            self.state.unhandled.append(entry)
            _log.warning("fake-discord has no route for %s %s", entry.method, entry.path)
            return err.route_not_found().response()
        except web.HTTPMethodNotAllowed:
            self.state.unhandled.append(entry)
            return err.method_not_allowed().response()

    def _check_auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bot {self.state.token}":
            raise err.unauthorized()

    def routes(self) -> list[web.RouteDef]:
        p = API_PREFIX
        app = p + "/applications/{app_id}"
        guild_commands = app + "/guilds/{guild_id}/commands"
        return [
            web.get(p + "/users/@me", self.me),
            web.get(p + "/users/{user_id}", self.get_user),
            web.post(p + "/users/@me/channels", self.create_dm),
            web.get(p + "/oauth2/applications/@me", self.application),
            web.get(p + "/applications/@me", self.application),
            web.get(p + "/gateway", self.gateway_info),
            web.get(p + "/gateway/bot", self.gateway_info),
            web.get(p + "/guilds/{guild_id}", self.get_guild),
            web.get(p + "/guilds/{guild_id}/channels", self.guild_channels),
            web.get(p + "/guilds/{guild_id}/roles", self.guild_roles),
            web.get(p + "/guilds/{guild_id}/members/{user_id}", self.get_member),
            web.get(app + "/commands", self.list_commands),
            web.put(app + "/commands", self.overwrite_commands),
            web.post(app + "/commands", self.upsert_command),
            web.get(app + "/commands/{command_id}", self.get_command),
            web.patch(app + "/commands/{command_id}", self.edit_command),
            web.delete(app + "/commands/{command_id}", self.delete_command),
            web.get(guild_commands, self.list_commands),
            web.put(guild_commands, self.overwrite_commands),
            web.post(guild_commands, self.upsert_command),
            web.get(guild_commands + "/{command_id}", self.get_command),
            web.patch(guild_commands + "/{command_id}", self.edit_command),
            web.delete(guild_commands + "/{command_id}", self.delete_command),
        ]

    # Users and application

    async def me(self, _request: web.Request) -> web.Response:
        return json_response(self.state.world.bot.payload())

    async def get_user(self, request: web.Request) -> web.Response:
        try:
            user = self.state.world.user(snowflake_arg(request, "user_id"))
        except KeyError:
            raise err.unknown_user() from None
        return json_response(user.payload())

    async def create_dm(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        try:
            user = self.state.world.user(int(body.payload.get("recipient_id", 0)))
        except KeyError:
            raise err.unknown_user() from None
        channel = self.state.world.dm_channel(user)
        return json_response(channel.payload())

    async def application(self, _request: web.Request) -> web.Response:
        world = self.state.world
        owner = world.user(world.guild.owner_id)
        return json_response(
            {
                "id": str(self.state.application_id),
                "name": world.bot.name,
                "description": "sdbot under test",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": owner.payload(),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "bot": world.bot.payload(),
                "tags": [],
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "approximate_guild_count": 1,
            }
        )

    async def gateway_info(self, _request: web.Request) -> web.Response:
        return json_response(
            {
                "url": self.state.gateway.url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    # Guild

    def _guild(self, request: web.Request) -> Any:
        guild = self.state.world.guild
        if snowflake_arg(request, "guild_id") != guild.id:
            raise err.unknown_guild()
        return guild

    async def get_guild(self, request: web.Request) -> web.Response:
        return json_response(self._guild(request).payload())

    async def guild_channels(self, request: web.Request) -> web.Response:
        channels = self._guild(request).channels.values()
        return json_response([c.payload(self.state.world.bot.id) for c in channels])

    async def guild_roles(self, request: web.Request) -> web.Response:
        return json_response([r.payload() for r in self._guild(request).roles.values()])

    async def get_member(self, request: web.Request) -> web.Response:
        member = self._guild(request).members.get(snowflake_arg(request, "user_id"))
        if member is None:
            raise err.unknown_member()
        return json_response(member.payload())

    # Application commands

    def _scope(self, request: web.Request) -> dict[str, dict[str, Any]]:
        """The stored commands for the route's scope (global, or the guild's)."""
        if snowflake_arg(request, "app_id") != self.state.application_id:
            raise err.missing_access()
        guild_id = None
        if "guild_id" in request.match_info:
            guild_id = self._guild(request).id
        return self.state.commands.setdefault(guild_id, {})

    def _stored(
        self, request: web.Request, data: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        command = {
            "type": 1,
            "options": [],
            "default_member_permissions": None,
            "nsfw": False,
            **data,
            "id": old["id"] if old else str(self.state.snowflake()),
            "application_id": str(self.state.application_id),
            "version": str(self.state.snowflake()),
        }
        if "guild_id" in request.match_info:
            command["guild_id"] = request.match_info["guild_id"]
        return command

    def _find(self, scope: dict[str, dict[str, Any]], request: web.Request) -> dict[str, Any]:
        command_id = request.match_info["command_id"]
        for command in scope.values():
            if command["id"] == command_id:
                return command
        raise err.unknown_command()

    async def list_commands(self, request: web.Request) -> web.Response:
        return json_response(list(self._scope(request).values()))

    async def overwrite_commands(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        commands = await read_json(request)
        request[PAYLOAD_KEY] = commands
        errors = FormErrors()
        check_commands(errors, commands)
        errors.raise_if_any()
        new = {c["name"]: self._stored(request, c, scope.get(c["name"])) for c in commands}
        scope.clear()
        scope.update(new)
        return json_response(list(scope.values()))

    async def upsert_command(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        body = await read_body(request)
        errors = FormErrors()
        check_command(errors, (), body.payload)
        errors.raise_if_any()
        old = scope.get(body.payload["name"])
        scope[body.payload["name"]] = command = self._stored(request, body.payload, old)
        return json_response(command, 200 if old else 201)

    async def get_command(self, request: web.Request) -> web.Response:
        return json_response(self._find(self._scope(request), request))

    async def edit_command(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        command = self._find(scope, request)
        body = await read_body(request)
        updated = {**command, **body.payload}
        errors = FormErrors()
        check_command(errors, (), updated)
        errors.raise_if_any()
        del scope[command["name"]]
        scope[updated["name"]] = updated
        return json_response(updated)

    async def delete_command(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        del scope[self._find(scope, request)["name"]]
        return web.Response(status=204)
