"""Point discord.py at another Discord REST base and gateway.

Settings `SDBOT_DISCORD_API_URL` and `SDBOT_DISCORD_GATEWAY_URL` route the bot through a
REST rate-limit proxy or a Discord-compatible server; the tests use the same switch to talk
to the fake Discord on loopback.

discord.py 2.7 has no option for this, so `apply_endpoints` sets the two class attributes it
reads: `discord.http.Route.BASE` (every REST and interaction-webhook URL is built from it when
the request is made) and `discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY` (where a
`discord.Client` connects; it never asks `GET /gateway/bot`, only `AutoShardedClient` does).
After READY, discord.py reconnects and RESUMEs at READY's `resume_gateway_url`; with a
gateway override that URL is ignored and every connection goes to the override, so a proxy
cannot be bypassed (see `_pin_gateway`).
"""

from __future__ import annotations

import inspect
from typing import Any, Final

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

DISCORD_API_URL: Final = "https://discord.com/api/v10"
DISCORD_GATEWAY_URL: Final = yarl.URL("wss://gateway.discord.gg/")

# `DiscordWebSocket.from_client` as discord.py defines it (a classmethod object).
_ORIGINAL_FROM_CLIENT: Final = inspect.getattr_static(DiscordWebSocket, "from_client")
_pinned_gateway: yarl.URL | None = None


def apply_endpoints(api_url: str | None, gateway_url: str | None) -> None:
    """Use `api_url` for REST and `gateway_url` for the gateway; None means Discord's own.

    `api_url` is the base that paths like `/users/@me` are appended to, e.g.
    `http://127.0.0.1:8080/api/v10` (http or https). `gateway_url` is a ws or wss URL, e.g.
    `ws://127.0.0.1:8080/gateway`; discord.py adds `?v=10&encoding=json&compress=...`.
    Raises ValueError naming the setting and the value when a URL is unusable.
    """
    api = _checked_url("API", api_url, ("http", "https")) if api_url else None
    gateway = _checked_url("gateway", gateway_url, ("ws", "wss")) if gateway_url else None
    Route.BASE = str(api).rstrip("/") if api else DISCORD_API_URL
    DiscordWebSocket.DEFAULT_GATEWAY = gateway or DISCORD_GATEWAY_URL
    _pin_gateway(gateway)


def _checked_url(kind: str, value: str, schemes: tuple[str, ...]) -> yarl.URL:
    try:
        url = yarl.URL(value.strip())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Discord {kind} URL is not a URL: {value!r} ({exc})") from None
    allowed = " or ".join(f"{s}://" for s in schemes)
    if url.scheme not in schemes:
        raise ValueError(f"Discord {kind} URL must start with {allowed}, got {value!r}")
    if not url.host:
        raise ValueError(f"Discord {kind} URL has no host: {value!r}")
    if url.query_string or url.fragment:
        raise ValueError(f"Discord {kind} URL must not have a query or fragment, got {value!r}")
    return url


def _pin_gateway(gateway: yarl.URL | None) -> None:
    """Make every gateway connection (first, reconnect, RESUME) go to `gateway`.

    discord.py passes READY's `resume_gateway_url` (or `GET /gateway/bot`'s `url` for
    `AutoShardedClient`) to `DiscordWebSocket.from_client`; Discord's own URL there would
    skip the override. The wrapper swaps in `gateway`; None restores discord.py's method.
    """
    global _pinned_gateway
    _pinned_gateway = gateway
    replacement = _ORIGINAL_FROM_CLIENT if gateway is None else classmethod(_from_client_pinned)
    setattr(DiscordWebSocket, "from_client", replacement)  # noqa: B010 - method assignment


async def _from_client_pinned(
    cls: type[DiscordWebSocket], client: Any, **kwargs: Any
) -> DiscordWebSocket:
    if _pinned_gateway is not None:
        kwargs["gateway"] = _pinned_gateway
    result: DiscordWebSocket = await _ORIGINAL_FROM_CLIENT.__func__(cls, client, **kwargs)
    return result
