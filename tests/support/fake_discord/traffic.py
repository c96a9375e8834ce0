"""What went over the wire: recorded requests and injected faults."""

from __future__ import annotations

import math
import re
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .errors import json_response


@dataclass
class RecordedRequest:
    """One REST request: `path` is relative to the API base (e.g. `/channels/1/messages`)."""

    method: str
    path: str
    query: dict[str, str]
    at: float
    status: int = 0
    payload: Any = None
    error_code: int | None = None
    injected: bool = False

    def matches(self, pattern: str) -> bool:
        """`"PATCH /webhooks/.*/@original"` or a bare path regex (searched, not anchored)."""
        method, regex = split_pattern(pattern)
        return (method is None or method == self.method) and re.search(regex, self.path) is not None


def split_pattern(pattern: str) -> tuple[str | None, str]:
    """("PATCH", "/x") from "PATCH /x"; (None, "/x") from "/x"."""
    head, _, rest = pattern.partition(" ")
    if rest and head.isalpha() and head.upper() == head:
        return head, rest.strip()
    return None, pattern


@dataclass
class Fault:
    """Answer the next `times` matching requests with `status` instead of handling them."""

    pattern: str
    status: int
    times: int = 1
    retry_after: float = 0.05
    is_global: bool = False
    via: bool = True
    code: int = 0
    message: str | None = None
    hits: list[RecordedRequest] = field(default_factory=list)

    def take(self, request: RecordedRequest) -> bool:
        """Consume one use if `request` matches."""
        if self.times <= 0 or not request.matches(self.pattern):
            return False
        self.times -= 1
        self.hits.append(request)
        return True

    def response(self) -> web.Response:
        if self.status == 429:
            return self._rate_limited()
        text = self.message or f"{self.status}: injected by fake-discord"
        return json_response({"message": text, "code": self.code}, self.status)

    def _rate_limited(self) -> web.Response:
        """A 429 shaped like Discord's: body retry_after, X-RateLimit-*, and `Via`.

        discord.py treats a 429 without `Via` as a Cloudflare ban and raises at once;
        `via=False` injects exactly that.
        """
        headers = {
            "Retry-After": str(math.ceil(self.retry_after)),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + self.retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{self.retry_after:.3f}",
            # One bucket per fault, so unrelated routes never share a discord.py bucket.
            "X-RateLimit-Bucket": f"fake-{zlib.crc32(self.pattern.encode()):08x}",
            "X-RateLimit-Scope": "global" if self.is_global else "user",
        }
        if self.is_global:
            headers["X-RateLimit-Global"] = "true"
        if self.via:
            headers["Via"] = "1.1 google"
        body = {
            "message": "You are being rate limited.",
            "retry_after": self.retry_after,
            "global": self.is_global,
        }
        return json_response(body, 429, headers)
