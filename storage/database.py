"""The one aiosqlite connection: PRAGMAs, migrations, transactions and lock retries.

aiosqlite runs every statement on one thread, so statements never run at the same
time, but coroutines can still interleave *between* statements. `Database` keeps
an `asyncio.Lock` around every read and every transaction so one coroutine never
sees (or joins) another's unfinished transaction, and writes use
`BEGIN IMMEDIATE` so a second process waits for the write lock instead of failing
halfway through.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite

from storage.errors import DatabaseBusy, DatabaseUnavailable, StorageError
from storage.schema import load_migrations, migrate

Clock = Callable[[], float]
"""Returns the time as epoch seconds; `time.time` outside tests."""

Params = Sequence[Any]
T = TypeVar("T")

LOCK_RETRIES = 4
"""How many times a statement that found the database locked is tried in all."""


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _probe(path: Path, busy_timeout: float) -> None:
    """Open the file and read its header, raising sqlite3.Error if that fails."""
    conn = sqlite3.connect(path, timeout=busy_timeout)
    try:
        conn.execute("PRAGMA schema_version").fetchall()
    finally:
        conn.close()


class Queries(Protocol):
    """What `Session` and `Database` both offer: code can take either."""

    async def one(self, sql: str, params: Params = ()) -> sqlite3.Row | None: ...

    async def all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]: ...

    async def run(self, sql: str, params: Params = ()) -> int: ...


class Session:
    """Statements on the connection, for code holding the lock (a read or a transaction)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self._conn.execute_fetchall(sql, params)
        for row in rows:
            return row
        return None

    async def run(self, sql: str, params: Params = ()) -> int:
        """Run one write statement; return how many rows it changed."""
        before = self._conn.total_changes
        await self._conn.execute_fetchall(sql, params)
        return self._conn.total_changes - before

    async def many(self, sql: str, rows: Iterable[Params]) -> int:
        """Run one write statement once per parameter row; return the rows changed."""
        before = self._conn.total_changes
        await self._conn.executemany(sql, rows)
        return self._conn.total_changes - before


class Database:
    """One SQLite file, opened with WAL, a busy timeout and foreign keys on.

    Open it with `await Database.open(path)`; close it with `await db.close()`.
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path, clock: Clock) -> None:
        self._conn = conn
        self._session = Session(conn)
        self._lock = asyncio.Lock()
        self.path = path
        self.clock = clock

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        clock: Clock = time.time,
        busy_timeout: float = 5.0,
        synchronous: str = "NORMAL",
        target_version: int | None = None,
    ) -> Database:
        """Create parent directories, open the file, set PRAGMAs, apply migrations.

        `target_version` stops at that migration (tests use it to build an old
        database); `synchronous` is SQLite's: NORMAL survives a process crash,
        FULL also survives a power cut, at some cost per commit.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailable(path, exc.strerror or str(exc)) from exc
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise StorageError(
                f"synchronous must be OFF, NORMAL, FULL or EXTRA; got {synchronous!r}"
            )
        try:
            # Probe with plain sqlite3 first: a failed aiosqlite connect leaves its
            # worker thread to report to an event loop that may be gone by then.
            await asyncio.to_thread(_probe, path, busy_timeout)
            conn = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout)
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(path, str(exc)) from exc
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute_fetchall(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            mode = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
            if next(iter(mode))[0].lower() != "wal":
                raise DatabaseUnavailable(path, "the file system does not support WAL mode")
            await conn.execute_fetchall(f"PRAGMA synchronous = {synchronous.upper()}")
            await conn.execute_fetchall("PRAGMA foreign_keys = ON")
            await migrate(conn, load_migrations(), target=target_version)
        except sqlite3.Error as exc:
            await conn.close()
            raise DatabaseUnavailable(path, str(exc)) from exc
        except BaseException:
            await conn.close()
            raise
        return cls(conn, path, clock)

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()

    async def version(self) -> int:
        """The highest migration applied to this database."""
        row = await self.one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        return int(row[0]) if row else 0

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Session]:
        """Several reads that no other coroutine's writes interleave with."""
        async with self._lock:
            yield self._session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        """`BEGIN IMMEDIATE` ... `COMMIT`, or `ROLLBACK` if the block raises or is cancelled."""
        async with self._lock:
            try:
                await self._retrying(lambda: self._conn.execute_fetchall("BEGIN IMMEDIATE"))
                yield self._session
                await self._retrying(lambda: self._conn.execute_fetchall("COMMIT"))
            except BaseException:
                # Also when COMMIT itself failed (disk full, busy): else the connection
                # stays inside this transaction and later writes vanish with it.
                await self._rollback()
                raise

    async def _rollback(self) -> None:
        # Always sent: a cancelled await does not stop its statement, so a BEGIN
        # may still be queued on the connection thread; this ROLLBACK runs after it.
        with contextlib.suppress(sqlite3.OperationalError):
            await self._conn.execute_fetchall("ROLLBACK")

    async def all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        async with self._lock:
            return await self._retrying(lambda: self._session.all(sql, params))

    async def one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        async with self._lock:
            return await self._retrying(lambda: self._session.one(sql, params))

    async def run(self, sql: str, params: Params = ()) -> int:
        """One write statement in its own (implicit) transaction; the rows it changed."""
        async with self._lock:
            return await self._retrying(lambda: self._session.run(sql, params))

    async def _retrying(self, op: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(LOCK_RETRIES):
            try:
                return await op()
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc):
                    raise
                if attempt == LOCK_RETRIES - 1:
                    raise DatabaseBusy(
                        f"the database {self.path} stayed locked by another process "
                        f"through {LOCK_RETRIES} tries: {exc}"
                    ) from exc
                await asyncio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")
