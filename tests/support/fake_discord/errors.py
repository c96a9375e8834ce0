"""Discord-shaped API errors and JSON responses.

Every error the fake returns carries Discord's JSON error body (`code`, `message`, and for
form errors a nested `errors` tree), so discord.py raises the same exception type with the
same `code` it would raise against Discord.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

JSON_CONTENT_TYPE = "application/json"


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A response whose Content-Type is exactly `application/json`.

    discord.py decodes a body only when the header equals that string; aiohttp's
    `web.json_response` appends `; charset=utf-8`, and discord.py would then hand the raw
    text to code that expects a dict.
    """
    all_headers = {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})}
    return web.Response(status=status, body=json.dumps(data).encode(), headers=all_headers)


class ApiError(Exception):
    """An error response: HTTP status, Discord JSON error code and message."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        errors: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} (code {code}): {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body

    def response(self) -> web.Response:
        return json_response(self.body(), self.status, self.headers)


def unauthorized() -> ApiError:
    return ApiError(401, 0, "401: Unauthorized")


def route_not_found() -> ApiError:
    return ApiError(404, 0, "404: Not Found")


def method_not_allowed() -> ApiError:
    return ApiError(405, 0, "405: Method Not Allowed")


def unknown_channel() -> ApiError:
    return ApiError(404, 10003, "Unknown Channel")


def unknown_guild() -> ApiError:
    return ApiError(404, 10004, "Unknown Guild")


def unknown_member() -> ApiError:
    return ApiError(404, 10007, "Unknown Member")


def unknown_message() -> ApiError:
    return ApiError(404, 10008, "Unknown Message")


def unknown_user() -> ApiError:
    return ApiError(404, 10013, "Unknown User")


def unknown_webhook() -> ApiError:
    return ApiError(404, 10015, "Unknown Webhook")


def unknown_command() -> ApiError:
    return ApiError(404, 10063, "Unknown application command")


def unknown_interaction() -> ApiError:
    return ApiError(404, 10062, "Unknown interaction")


def already_acknowledged() -> ApiError:
    return ApiError(400, 40060, "Interaction has already been acknowledged.")


def entity_too_large() -> ApiError:
    return ApiError(413, 40005, "Request entity too large")


def missing_access() -> ApiError:
    return ApiError(403, 50001, "Missing Access")


def cannot_edit_others() -> ApiError:
    return ApiError(403, 50005, "Cannot edit a message authored by another user")


def empty_message() -> ApiError:
    return ApiError(400, 50006, "Cannot send an empty message")


def cannot_dm_user() -> ApiError:
    return ApiError(403, 50007, "Cannot send messages to this user")


def missing_permissions() -> ApiError:
    return ApiError(403, 50013, "Missing Permissions")


def invalid_webhook_token() -> ApiError:
    return ApiError(401, 50027, "Invalid Webhook Token")


class FormErrors:
    """Collects field errors into Discord's nested `errors` tree (code 50035)."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}

    def add(self, path: Sequence[str | int], code: str, message: str) -> None:
        node = self.tree
        for key in path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def check_length(
        self, path: Sequence[str | int], value: str | None, low: int, high: int
    ) -> None:
        """Add BASE_TYPE_BAD_LENGTH unless `low <= len(value) <= high` (None counts as 0)."""
        length = len(value or "")
        if not low <= length <= high:
            self.add(
                path,
                "BASE_TYPE_BAD_LENGTH",
                f"Must be between {low} and {high} in length.",
            )

    def check_max_items(self, path: Sequence[str | int], items: Sequence[Any], high: int) -> None:
        if len(items) > high:
            self.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {high} or fewer in length.")

    def raise_if_any(self) -> None:
        if self.tree:
            raise ApiError(400, 50035, "Invalid Form Body", errors=self.tree)
