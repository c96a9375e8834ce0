"""Messages the fake stores: content, embeds, components, attachments (with their bytes),
every version with the time it was written, and whether it was deleted.
"""

from __future__ import annotations

import copy
import json
import mimetypes
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import errors as err
from .errors import FormErrors
from .limits import EPHEMERAL, LOADING, MAX_ATTACHMENTS, check_message, walk_components
from .world import FakeUser

# Message types.
DEFAULT = 0
REPLY = 19
CHAT_INPUT_COMMAND = 20

DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024

# Where a handler leaves the parsed body, for the request log.
PAYLOAD_KEY = web.RequestKey("fake_payload", object)


@dataclass
class StoredFile:
    """An attachment with its bytes; `url` is served by the fake (`GET /attachments/...`)."""

    id: int
    filename: str
    data: bytes
    content_type: str
    description: str | None = None
    base_url: str = ""

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def url(self) -> str:
        return f"{self.base_url}/attachments/{self.id}/{self.filename}"

    def image_size(self) -> tuple[int, int] | None:
        """(width, height) read from a PNG header, else None."""
        if self.data[:8] != b"\x89PNG\r\n\x1a\n" or len(self.data) < 24:
            return None
        width, height = struct.unpack(">II", self.data[16:24])
        return width, height

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            data["description"] = self.description
        dims = self.image_size()
        if dims is not None:
            data["width"], data["height"] = dims
        return data


@dataclass(frozen=True)
class MessageVersion:
    """One state of a message: at creation or after an edit; `at` is the fake clock."""

    at: float
    content: str
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    attachments: tuple[StoredFile, ...]
    flags: int


@dataclass
class FakeMessage:
    """A stored message. The fields hold its current state; `versions` its history."""

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    timestamp: str
    type: int = DEFAULT
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[StoredFile] = field(default_factory=list)
    flags: int = 0
    webhook_id: int | None = None
    interaction_metadata: dict[str, Any] | None = None
    message_reference: dict[str, Any] | None = None
    versions: list[MessageVersion] = field(default_factory=list)
    edited_timestamp: str | None = None
    deleted: bool = False
    deleted_at: float | None = None

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        """A deferred response still showing "Bot is thinking..."."""
        return bool(self.flags & LOADING)

    @property
    def edits(self) -> list[MessageVersion]:
        """The versions written after creation."""
        return self.versions[1:]

    @property
    def edit_times(self) -> list[float]:
        return [v.at for v in self.edits]

    def snapshot(self, at: float) -> None:
        """Append the current state to `versions`."""
        self.versions.append(
            MessageVersion(
                at,
                self.content,
                copy.deepcopy(self.embeds),
                copy.deepcopy(self.components),
                tuple(self.attachments),
                self.flags,
            )
        )

    def iter_components(self) -> Iterator[dict[str, Any]]:
        """Every component, nested ones included (rows, sections, containers)."""
        for _, component in walk_components(self.components):
            yield component

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in self.iter_components() if c.get("custom_id")]

    def component(self, custom_id: str) -> dict[str, Any]:
        """The component with this custom_id (LookupError listing those present)."""
        for component in self.iter_components():
            if component.get("custom_id") == custom_id:
                return component
        raise LookupError(
            f"message {self.id} has no component {custom_id!r}; has {self.custom_ids}"
        )

    def file(self, index: int = 0) -> bytes:
        """The bytes of attachment `index`."""
        return self.attachments[index].data

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "type": self.type,
            "content": self.content,
            "author": self.author.payload(),
            "timestamp": self.timestamp,
            "edited_timestamp": self.edited_timestamp,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.payload() for a in self.attachments],
            "embeds": copy.deepcopy(self.embeds),
            "components": copy.deepcopy(self.components),
            "pinned": False,
            "flags": self.flags,
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
            data["application_id"] = str(self.webhook_id)
        if self.interaction_metadata is not None:
            data["interaction_metadata"] = self.interaction_metadata
        if self.message_reference is not None:
            data["message_reference"] = self.message_reference
        return data


@dataclass
class Upload:
    """A file part of a multipart request (`files[n]`)."""

    index: int
    filename: str
    data: bytes


@dataclass
class RequestBody:
    """A JSON body, or a multipart body's `payload_json` plus its files."""

    payload: dict[str, Any]
    uploads: list[Upload]


async def read_body(request: web.Request) -> RequestBody:
    """Parse a JSON or multipart (payload_json + files[n]) request body."""
    if request.content_type.startswith("multipart/"):
        return await _read_multipart(request)
    payload = await read_json(request)
    if not isinstance(payload, dict):
        raise err.ApiError(400, 50109, "The request body contains invalid JSON.")
    request[PAYLOAD_KEY] = payload
    return RequestBody(payload, [])


async def read_json(request: web.Request) -> Any:
    """The JSON body ({} when empty)."""
    raw = await request.read()
    return json.loads(raw) if raw else {}


async def _read_multipart(request: web.Request) -> RequestBody:
    form = await request.post()
    payload: dict[str, Any] = {}
    uploads: list[Upload] = []
    for name, value in form.items():
        if name == "payload_json":
            payload = json.loads(_form_text(value))
        elif name.startswith("files[") and isinstance(value, web.FileField):
            index = int(name[len("files[") : -1])
            uploads.append(Upload(index, value.filename, value.file.read()))
    uploads.sort(key=lambda u: u.index)
    request[PAYLOAD_KEY] = payload
    return RequestBody(payload, uploads)


def _form_text(value: str | bytes | bytearray | web.FileField) -> str:
    if isinstance(value, web.FileField):
        return value.file.read().decode()
    return value if isinstance(value, str) else bytes(value).decode()


def guess_content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


class MessageWriter:
    """Applies create/edit bodies to messages, enforcing Discord's message limits."""

    def __init__(
        self,
        new_id: Callable[[], int],
        base_url: Callable[[], str],
        size_limit: Callable[[], int],
    ) -> None:
        self._new_id = new_id
        self._base_url = base_url
        self._size_limit = size_limit
        self.files: dict[int, StoredFile] = {}

    def store_file(
        self,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        description: str | None = None,
    ) -> StoredFile:
        stored = StoredFile(
            self._new_id(),
            filename,
            data,
            content_type or guess_content_type(filename),
            description,
            self._base_url(),
        )
        self.files[stored.id] = stored
        return stored

    def validate(self, payload: dict[str, Any], uploads: list[Upload], *, creating: bool) -> None:
        """Raise 413 for oversized files and 50035/50006 for invalid or empty messages."""
        limit = self._size_limit()
        if any(len(u.data) > limit for u in uploads):
            raise err.entity_too_large()
        errors = FormErrors()
        check_message(errors, payload)
        errors.check_max_items(
            ("attachments",), payload.get("attachments") or uploads, MAX_ATTACHMENTS
        )
        errors.raise_if_any()
        has_text = payload.get("content") or payload.get("embeds") or payload.get("components")
        if creating and not has_text and not uploads and not payload.get("poll"):
            raise err.empty_message()

    def apply(
        self,
        message: FakeMessage,
        payload: dict[str, Any],
        uploads: list[Upload],
        *,
        creating: bool,
    ) -> None:
        """Write the fields present in `payload` (and the uploads) onto `message`."""
        for key in ("content", "embeds", "components"):
            if key in payload:
                value = payload[key]
                setattr(
                    message, key, value if value is not None else ([] if key != "content" else "")
                )
        if payload.get("flags") is not None:
            requested = int(payload["flags"]) & ~LOADING
            if creating:
                message.flags |= requested
            else:  # an edit cannot make a message ephemeral or public
                message.flags = (message.flags & (EPHEMERAL | LOADING)) | (requested & ~EPHEMERAL)
        message.attachments = self._attachments(message, payload, uploads, creating=creating)

    def _attachments(
        self,
        message: FakeMessage,
        payload: dict[str, Any],
        uploads: list[Upload],
        *,
        creating: bool,
    ) -> list[StoredFile]:
        by_index = {u.index: u for u in uploads}
        if "attachments" not in payload:
            kept = [] if creating else list(message.attachments)
            return kept + [self.store_file(u.filename, u.data) for u in uploads]
        existing = {a.id: a for a in message.attachments}
        result: list[StoredFile] = []
        for entry in payload["attachments"] or []:
            ident = int(entry["id"])
            if ident in existing:
                result.append(existing[ident])
            elif ident in by_index:
                upload = by_index[ident]
                name = entry.get("filename") or upload.filename
                result.append(
                    self.store_file(name, upload.data, description=entry.get("description"))
                )
        return result
