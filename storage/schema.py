"""Numbered SQL migrations: `storage/migrations/NNNN_name.sql`, applied in order.

Applied versions are recorded in `schema_migrations`. All pending migrations run
in one `BEGIN IMMEDIATE` transaction, so a failure (or a crash) leaves the
database exactly as it was, and two processes opening the same file at once
cannot both apply the same migration.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources

import aiosqlite

from storage.errors import MigrationError, SchemaTooNew

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The script cut into single statements (triggers and comments kept whole)."""
        statements: list[str] = []
        buffer = ""
        for chunk in self.sql.split(";"):
            buffer += chunk + ";"
            if sqlite3.complete_statement(buffer):
                if not _only_comments(buffer):
                    statements.append(buffer.strip())
                buffer = ""
        if not _only_comments(buffer):
            raise MigrationError(self.version, f"migration {self.name}: unterminated statement")
        return statements


def _only_comments(text: str) -> bool:
    lines = [line.strip() for line in text.splitlines()]
    return all(not line or line.startswith("--") or line == ";" for line in lines)


def load_migrations() -> list[Migration]:
    """Every migration shipped in the package, ordered by version."""
    folder = resources.files("storage").joinpath("migrations")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(version, f"two migrations have version {version:04d}")
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    versions = sorted(found)
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(
            0, f"migration versions must run 1, 2, 3... without gaps; got {versions}"
        )
    return [found[v] for v in versions]


async def applied_version(conn: aiosqlite.Connection) -> int:
    """The highest applied migration, 0 for a fresh database."""
    await conn.execute_fetchall(_BOOKKEEPING)
    rows = await conn.execute_fetchall("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    return int(next(iter(rows))[0])


async def migrate(
    conn: aiosqlite.Connection,
    migrations: list[Migration],
    *,
    target: int | None = None,
) -> list[int]:
    """Apply pending migrations up to `target` (default: all); return the versions applied.

    `conn` must be in autocommit mode (`isolation_level=None`).
    """
    known = migrations[-1].version if migrations else 0
    goal = known if target is None else target
    await conn.execute_fetchall("BEGIN IMMEDIATE")
    try:
        current = await applied_version(conn)
        if current > known:
            raise SchemaTooNew(current, known)
        done: list[int] = []
        for migration in migrations:
            if current < migration.version <= goal:
                await _apply(conn, migration)
                done.append(migration.version)
        await conn.execute_fetchall("COMMIT")
    except BaseException:
        if conn.in_transaction:
            await conn.execute_fetchall("ROLLBACK")
        raise
    return done


async def _apply(conn: aiosqlite.Connection, migration: Migration) -> None:
    for statement in migration.statements():
        try:
            await conn.execute_fetchall(statement)
        except sqlite3.Error as exc:
            raise MigrationError(
                migration.version,
                f"migration {migration.name} failed: {exc} (in: {statement[:80]})",
            ) from exc
    await conn.execute_fetchall(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        (migration.version, migration.name, time.time()),
    )
