"""Interaction callbacks and the interaction webhook (followups, @original edits).

The rules enforced here are the ones bots get wrong:
- the first callback must arrive within `interaction_deadline` (3 s) of dispatch, else
  404 10062; a second callback is 400 40060;
- the token works for `token_lifetime` (15 min) after dispatch, then 401 50027;
- webhook use before any callback is 404 10015;
- after a deferred (type 5) response the first followup *replaces* the "thinking" message
  (and keeps the defer's ephemerality), exactly as Discord does; once that message is
  deleted (`DELETE .../messages/@original`), a followup is a new message with its own flags.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import errors as err
from .errors import ApiError, FormErrors, json_response
from .interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    AUTOCOMPLETE_RESULT,
    CHANNEL_MESSAGE,
    DEFERRED_CHANNEL_MESSAGE,
    DEFERRED_UPDATE_MESSAGE,
    MESSAGE_COMPONENT,
    MODAL,
    MODAL_SUBMIT,
    UPDATE_MESSAGE,
    InteractionRecord,
    RejectedRequest,
)
from .limits import EPHEMERAL, LOADING, check_modal
from .messages import CHAT_INPUT_COMMAND, DEFAULT, FakeMessage, RequestBody, Upload, read_body
from .rest import API_PREFIX, snowflake_arg
from .state import FakeState

# Which callback types Discord accepts for each interaction type.
VALID_CALLBACKS = {
    APPLICATION_COMMAND: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, MODAL},
    MESSAGE_COMPONENT: {
        CHANNEL_MESSAGE,
        DEFERRED_CHANNEL_MESSAGE,
        DEFERRED_UPDATE_MESSAGE,
        UPDATE_MESSAGE,
        MODAL,
    },
    MODAL_SUBMIT: {
        CHANNEL_MESSAGE,
        DEFERRED_CHANNEL_MESSAGE,
        DEFERRED_UPDATE_MESSAGE,
        UPDATE_MESSAGE,
    },
    AUTOCOMPLETE: {AUTOCOMPLETE_RESULT},
}


class InteractionRoutes:
    """`POST /interactions/{id}/{token}/callback` and `/webhooks/{app}/{token}...`."""

    def __init__(self, state: FakeState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        webhook = API_PREFIX + "/webhooks/{app_id}/{token}"
        message = webhook + "/messages/{message_id}"
        return [
            web.post(API_PREFIX + "/interactions/{interaction_id}/{token}/callback", self.callback),
            web.post(webhook, self.followup),
            web.get(message, self.get_message),
            web.patch(message, self.edit_message),
            web.delete(message, self.delete_message),
        ]

    def _reject(
        self, record: InteractionRecord | None, request: web.Request, exc: ApiError
    ) -> None:
        if record is not None:
            path = request.path[len(API_PREFIX) :]
            record.errors.append(
                RejectedRequest(request.method, path, exc.status, exc.code, exc.message)
            )

    # Callback

    async def callback(self, request: web.Request) -> web.Response:
        record = self.state.interactions.get(snowflake_arg(request, "interaction_id"))
        try:
            if record is None or record.token != request.match_info["token"]:
                raise err.unknown_interaction()
            if record.response_type is not None:
                raise err.already_acknowledged()
            if self.state.now() - record.dispatched_at > self.state.interaction_deadline:
                raise err.unknown_interaction()
            body = await read_body(request)
            await self._respond(record, body)
        except ApiError as exc:
            self._reject(record, request, exc)
            raise
        if request.query.get("with_response", "").lower() in ("1", "true"):
            return json_response(self._callback_result(record))
        return web.Response(status=204)

    async def _respond(self, record: InteractionRecord, body: RequestBody) -> None:
        kind = body.payload.get("type")
        data: dict[str, Any] = body.payload.get("data") or {}
        self._check_type(record, kind)
        if kind == CHANNEL_MESSAGE:
            self.state.writer.validate(data, body.uploads, creating=True)
            record.message = await self._create(record, data, body.uploads)
        elif kind == DEFERRED_CHANNEL_MESSAGE:
            record.message = await self._create(record, {"flags": data.get("flags")}, [], LOADING)
        elif kind == DEFERRED_UPDATE_MESSAGE:
            record.message = record.source_message
        elif kind == UPDATE_MESSAGE:
            assert record.source_message is not None
            self.state.writer.validate(data, body.uploads, creating=False)
            record.message = await self._edit(record.source_message, data, body.uploads)
        elif kind == AUTOCOMPLETE_RESULT:
            record.choices = self._choices(data)
        elif kind == MODAL:
            errors = FormErrors()
            check_modal(errors, data)
            errors.raise_if_any()
            record.modal = data
        record.response_type = kind
        record.response_data = data
        record.responded_at = self.state.now()
        self.state.notifier.notify()

    def _check_type(self, record: InteractionRecord, kind: Any) -> None:
        allowed = set(VALID_CALLBACKS.get(record.type, set()))
        if record.type == MODAL_SUBMIT and record.source_message is None:
            allowed -= {DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE}
        if kind not in allowed:
            errors = FormErrors()
            errors.add(
                ("type",),
                "INTERACTION_RESPONSE_TYPE_INVALID",
                f"Callback type {kind} is not valid for interaction type {record.type}; "
                f"valid: {sorted(allowed)}",
            )
            errors.raise_if_any()

    def _choices(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        choices: list[dict[str, Any]] = data.get("choices") or []
        errors = FormErrors()
        errors.check_max_items(("data", "choices"), choices, 25)
        errors.raise_if_any()
        return choices

    def _callback_result(self, record: InteractionRecord) -> dict[str, Any]:
        """The `?with_response=1` body discord.py 2.5+ parses into InteractionCallbackResponse."""
        kind = record.response_type
        message = (
            record.message
            if kind in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, UPDATE_MESSAGE)
            else None
        )
        interaction: dict[str, Any] = {
            "id": str(record.id),
            "type": record.type,
            "response_message_loading": kind == DEFERRED_CHANNEL_MESSAGE,
            "response_message_ephemeral": bool(message and message.ephemeral),
        }
        resource: dict[str, Any] = {"type": kind}
        if message is not None:
            interaction["response_message_id"] = str(message.id)
            resource["message"] = message.payload()
        return {"interaction": interaction, "resource": resource}

    # Messages written with the interaction token

    async def _create(
        self,
        record: InteractionRecord,
        payload: dict[str, Any],
        uploads: list[Upload],
        flags: int = 0,
    ) -> FakeMessage:
        """A message written with the token (validated by the caller)."""
        message = self.state.new_message(
            record.channel,
            self.state.world.bot,
            type=CHAT_INPUT_COMMAND if record.type == APPLICATION_COMMAND else DEFAULT,
            flags=flags | (int(payload.get("flags") or 0) & EPHEMERAL),
            webhook_id=self.state.application_id,
            interaction_metadata=self._metadata(record),
        )
        self.state.writer.apply(message, payload, uploads, creating=True)
        await self.state.publish(message)
        return message

    async def _edit(
        self, message: FakeMessage, payload: dict[str, Any], uploads: list[Upload]
    ) -> FakeMessage:
        """Apply an edit (validated by the caller); an edit ends the "thinking" state."""
        self.state.writer.apply(message, payload, uploads, creating=False)
        message.flags &= ~LOADING
        await self.state.edited(message)
        return message

    def _metadata(self, record: InteractionRecord) -> dict[str, Any]:
        owners = {"0": str(record.guild_id)} if record.guild_id else {"1": str(record.user.id)}
        metadata: dict[str, Any] = {
            "id": str(record.id),
            "type": record.type,
            "user": record.user.payload(),
            "authorizing_integration_owners": owners,
        }
        if record.source_message is not None:
            metadata["interacted_message_id"] = str(record.source_message.id)
        return metadata

    # Webhook

    def _token_record(self, request: web.Request) -> InteractionRecord:
        record = self.state.interaction_by_token(request.match_info["token"])
        if record is None or snowflake_arg(request, "app_id") != self.state.application_id:
            raise err.unknown_webhook()
        if self.state.now() - record.dispatched_at > self.state.token_lifetime:
            raise err.invalid_webhook_token()
        if record.response_type is None:
            raise err.unknown_webhook()
        return record

    def _token_message(self, record: InteractionRecord, request: web.Request) -> FakeMessage:
        key = request.match_info["message_id"]
        if key == "@original":
            message = record.message
        else:
            wanted = int(key) if key.isdigit() else -1
            message = next(
                (
                    m
                    for m in [record.message, *record.followups]
                    if m is not None and m.id == wanted
                ),
                None,
            )
        if message is None or message.deleted:
            raise err.unknown_message()
        return message

    async def _with_record(self, request: web.Request, action: Any) -> web.Response:
        record: InteractionRecord | None = self.state.interaction_by_token(
            request.match_info["token"]
        )
        try:
            record = self._token_record(request)
            response: web.Response = await action(record)
            return response
        except ApiError as exc:
            self._reject(record, request, exc)
            raise

    async def followup(self, request: web.Request) -> web.Response:
        async def action(record: InteractionRecord) -> web.Response:
            body = await read_body(request)
            original = record.message
            self.state.writer.validate(body.payload, body.uploads, creating=True)
            if (
                record.response_type == DEFERRED_CHANNEL_MESSAGE
                and original is not None
                and original.loading
                and not original.deleted
            ):
                message = await self._edit(original, body.payload, body.uploads)
            else:
                message = await self._create(record, body.payload, body.uploads)
            record.followups.append(message)
            self.state.notifier.notify()
            if request.query.get("wait", "").lower() in ("1", "true"):
                return json_response(message.payload())
            return web.Response(status=204)

        return await self._with_record(request, action)

    async def get_message(self, request: web.Request) -> web.Response:
        async def action(record: InteractionRecord) -> web.Response:
            return json_response(self._token_message(record, request).payload())

        return await self._with_record(request, action)

    async def edit_message(self, request: web.Request) -> web.Response:
        async def action(record: InteractionRecord) -> web.Response:
            message = self._token_message(record, request)
            body = await read_body(request)
            self.state.writer.validate(body.payload, body.uploads, creating=False)
            await self._edit(message, body.payload, body.uploads)
            return json_response(message.payload())

        return await self._with_record(request, action)

    async def delete_message(self, request: web.Request) -> web.Response:
        async def action(record: InteractionRecord) -> web.Response:
            await self.state.delete(self._token_message(record, request))
            return web.Response(status=204)

        return await self._with_record(request, action)
