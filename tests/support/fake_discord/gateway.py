"""The gateway websocket: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats, RESUME.

Every dispatched event is kept per session with its sequence number, so a client that drops
and RESUMEs gets the events it missed, then RESUMED, as Discord does.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .waiting import Notifier

_log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_MS = 41250

# Opcodes.
DISPATCH = 0
HEARTBEAT = 1
IDENTIFY = 2
RESUME = 6
RECONNECT = 7
REQUEST_GUILD_MEMBERS = 8
INVALID_SESSION = 9
HELLO = 10
HEARTBEAT_ACK = 11

# Close codes.
AUTHENTICATION_FAILED = 4004
ALREADY_AUTHENTICATED = 4005
# 1000/1001 from the client end a session; other codes keep it resumable.
SESSION_ENDING_CLOSE_CODES = (1000, 1001)

Event = tuple[str, dict[str, Any]]


@dataclass(eq=False)
class GatewaySession:
    """An identified session; `socket` is None while the client is disconnected."""

    id: str
    intents: int
    shard: list[int] | None
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    socket: web.WebSocketResponse | None = None
    ended: bool = False


class Gateway:
    """Serves `GET /gateway` as Discord's gateway for any number of sessions."""

    def __init__(
        self,
        token: Callable[[], str],
        notifier: Notifier,
        initial_events: Callable[[GatewaySession], list[Event]],
        member_chunk: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        self._token = token
        self._notifier = notifier
        self._initial_events = initial_events
        self._member_chunk = member_chunk
        self._sockets: set[web.WebSocketResponse] = set()
        self.url = ""
        self.sessions: dict[str, GatewaySession] = {}
        self.received: list[dict[str, Any]] = []
        self.identify_count = 0
        self.resume_count = 0
        self.heartbeat_count = 0

    @property
    def live_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions.values() if not s.ended]

    @property
    def connected(self) -> bool:
        return any(s.socket is not None for s in self.live_sessions)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(max_msg_size=0)
        await socket.prepare(request)
        self._sockets.add(socket)
        session: GatewaySession | None = None
        client_close_code: int | None = None
        try:
            await self._send(
                socket, {"op": HELLO, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}}
            )
            while True:
                message = await socket.receive()
                if message.type is WSMsgType.TEXT:
                    session = await self._on_frame(socket, session, json.loads(message.data))
                elif message.type is not WSMsgType.BINARY:
                    # CLOSE carries the client's close code; CLOSING means we closed it.
                    if message.type is WSMsgType.CLOSE:
                        client_close_code = message.data
                    break
        finally:
            self._sockets.discard(socket)
            self._detach(socket, session, client_close_code)
        return socket

    def _detach(
        self, socket: web.WebSocketResponse, session: GatewaySession | None, code: int | None
    ) -> None:
        if session is not None and session.socket is socket:
            session.socket = None
            if code in SESSION_ENDING_CLOSE_CODES:
                session.ended = True
        self._notifier.notify()

    async def _on_frame(
        self, socket: web.WebSocketResponse, session: GatewaySession | None, frame: dict[str, Any]
    ) -> GatewaySession | None:
        self.received.append(frame)
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            self.heartbeat_count += 1
            await self._send(socket, {"op": HEARTBEAT_ACK})
        elif op == IDENTIFY:
            return await self._identify(socket, session, data or {})
        elif op == RESUME:
            return await self._resume(socket, data or {})
        elif op == REQUEST_GUILD_MEMBERS and session is not None:
            await self._dispatch_to(session, "GUILD_MEMBERS_CHUNK", self._member_chunk(data or {}))
        return session

    async def _identify(
        self, socket: web.WebSocketResponse, current: GatewaySession | None, data: dict[str, Any]
    ) -> GatewaySession | None:
        if current is not None:
            await socket.close(code=ALREADY_AUTHENTICATED, message=b"Already authenticated.")
            return current
        if data.get("token") != self._token():
            await socket.close(code=AUTHENTICATION_FAILED, message=b"Authentication failed.")
            return None
        session = GatewaySession(uuid.uuid4().hex, int(data.get("intents") or 0), data.get("shard"))
        session.socket = socket
        self.sessions[session.id] = session
        self.identify_count += 1
        for event, payload in self._initial_events(session):
            await self._dispatch_to(session, event, payload)
        self._notifier.notify()
        return session

    async def _resume(
        self, socket: web.WebSocketResponse, data: dict[str, Any]
    ) -> GatewaySession | None:
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or session.ended or data.get("token") != self._token():
            await self._send(socket, {"op": INVALID_SESSION, "d": False})
            return None
        session.socket = socket
        last_seen = int(data.get("seq") or 0)
        for frame in [f for f in session.sent if f["s"] > last_seen]:
            await self._send(socket, frame)
        self.resume_count += 1
        await self._dispatch_to(session, "RESUMED", {"_trace": ["fake-discord"]})
        self._notifier.notify()
        return session

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH to every live session (buffered for resume while disconnected)."""
        sessions = self.live_sessions
        if not sessions:
            raise RuntimeError(f"cannot dispatch {event}: no client has identified on the gateway")
        for session in sessions:
            await self._dispatch_to(session, event, data)

    async def send_event(self, session: GatewaySession, event: str, data: dict[str, Any]) -> None:
        """Dispatch to one session."""
        await self._dispatch_to(session, event, data)

    async def _dispatch_to(self, session: GatewaySession, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = {"op": DISPATCH, "t": event, "s": session.seq, "d": data}
        session.sent.append(frame)
        if session.socket is not None:
            await self._send(session.socket, frame)

    async def _send(self, socket: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        frame = {"s": None, "t": None, "d": None, **frame}
        try:
            await socket.send_str(json.dumps(frame))
        except (ConnectionError, RuntimeError) as exc:
            _log.debug("fake gateway: send failed (%s); the frame waits for RESUME", exc)

    async def disconnect(self, code: int = 4000) -> None:
        """Close every client socket with `code` (4000: resumable, the client will RESUME)."""
        for session in self.live_sessions:
            if session.socket is not None:
                await session.socket.close(code=code, message=b"fake-discord disconnect")

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client closes and RESUMEs."""
        for session in self.live_sessions:
            if session.socket is not None:
                await self._send(session.socket, {"op": RECONNECT})

    async def invalidate_sessions(self, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION; not resumable means the client must IDENTIFY again."""
        for session in self.live_sessions:
            if not resumable:
                session.ended = True
            if session.socket is not None:
                await self._send(session.socket, {"op": INVALID_SESSION, "d": resumable})

    async def close(self) -> None:
        for socket in list(self._sockets):
            await socket.close(code=1001, message=b"fake-discord stopping")
