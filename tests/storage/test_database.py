"""Opening the database: PRAGMAs, migrations (fresh, repeated, upgrade in place), errors."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from storage import (
    Database,
    DatabaseBusy,
    DatabaseUnavailable,
    JobState,
    MigrationError,
    SchemaTooNew,
    Storage,
)
from storage.jobs import insert_job
from storage.schema import Migration, load_migrations, migrate
from tests.storage.conftest import START, FakeClock, new_job


async def test_open_creates_parent_dirs_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "sdbot.sqlite3"
    db = await Database.open(path, busy_timeout=5.0)
    try:
        assert path.exists()
        assert (await db.one("PRAGMA journal_mode"))[0] == "wal"  # type: ignore[index]
        assert (await db.one("PRAGMA foreign_keys"))[0] == 1  # type: ignore[index]
        assert (await db.one("PRAGMA busy_timeout"))[0] == 5000  # type: ignore[index]
        assert await db.version() == len(load_migrations()) >= 2
    finally:
        await db.close()


async def test_migrations_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "sdbot.sqlite3"
    for _ in range(3):
        db = await Database.open(path)
        await db.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [m.version for m in load_migrations()]


async def test_database_at_first_migration_upgrades_in_place(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old = await Database.open(data / "sdbot.sqlite3", target_version=1)
    assert await old.version() == 1
    assert await old.one("SELECT name FROM sqlite_master WHERE name = 'images'") is None
    # Rows as a version-1 sdbot wrote them.
    await old.run(
        "INSERT INTO jobs (user_id, guild_id, channel_id, request_json, action, state, "
        "created_at, seeds_json, delivered_at, finished_at, started_at, attempts) "
        "VALUES (7, NULL, 8, ?, 'imagine', 'done', ?, '[5, 6]', ?, ?, ?, 1)",
        (json.dumps({"prompt": "old"}), START, START + 9, START + 5, START + 1),
    )
    await old.run(
        "INSERT INTO jobs (user_id, channel_id, request_json, action, created_at) "
        "VALUES (7, 8, '{\"prompt\": \"queued\"}', 'imagine', ?)",
        (START + 2,),
    )
    await old.run(
        "INSERT INTO user_defaults (user_id, steps, model, updated_at) VALUES (7, 30, 'sd15', ?)",
        (START,),
    )
    await old.run("INSERT INTO rate_usage (user_id, images, at) VALUES (7, 4, ?)", (START + 10,))
    await old.close()

    storage = await Storage.open(data, images_per_hour=10, clock=FakeClock(START + 60))
    try:
        assert await storage.db.version() == len(load_migrations())
        done = await storage.jobs.get(1)
        assert done.request == {"prompt": "old"}
        assert done.seeds == (5, 6)
        assert done.delivered and done.result_message_id is None
        assert done.progress_message_id is None
        assert [j.request["prompt"] for j in await storage.jobs.unfinished()] == ["queued"]
        assert (await storage.settings.get(7)).steps == 30
        assert (await storage.limits.usage(7, None)).hour_used == 4
        # New tables from 0002 work on the upgraded file.
        await storage.images.save(1, 0, b"x", seed=5, width=8, height=8)
        assert (await storage.guilds.update(9, max_steps=20)).max_steps == 20
    finally:
        await storage.close()


async def test_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(DatabaseUnavailable, match="cannot open the database") as info:
        await Database.open(blocker / "sub" / "sdbot.sqlite3")
    assert info.value.path == blocker / "sub" / "sdbot.sqlite3"
    with pytest.raises(DatabaseUnavailable):
        await Storage.open(blocker)


async def test_database_path_that_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sdbot.sqlite3").mkdir()
    with pytest.raises(DatabaseUnavailable, match=r"sdbot\.sqlite3"):
        await Database.open(tmp_path / "sdbot.sqlite3")


async def test_schema_newer_than_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sdbot.sqlite3"
    db = await Database.open(path)
    await db.run("INSERT INTO schema_migrations VALUES (999, '0999_future.sql', 0)")
    await db.close()
    with pytest.raises(SchemaTooNew, match="version 999"):
        await Database.open(path)


async def test_failing_migration_leaves_database_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "sdbot.sqlite3"
    good = Migration(1, "0001_a.sql", "CREATE TABLE a (x INTEGER);")
    bad = Migration(2, "0002_b.sql", "CREATE TABLE b (x INTEGER);\nINSERT INTO nowhere VALUES (1);")
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        with pytest.raises(MigrationError, match=r"0002_b\.sql"):
            await migrate(conn, [good, bad])
        tables = {r[0] for r in await conn.execute_fetchall("SELECT name FROM sqlite_master")}
        assert "a" not in tables and "b" not in tables
        assert await migrate(conn, [good]) == [1]
        assert await migrate(conn, [good]) == []


def test_migration_statements_split_on_semicolons_only_between_statements() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE t (x TEXT DEFAULT 'a;b');
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        UPDATE t SET x = 'c;d';
    END;
    -- trailing comment
    """
    statements = Migration(1, "0001_t.sql", sql).statements()
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")


def test_shipped_migrations_are_numbered_from_one() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].name == "0001_init.sql"


def test_storage_imports_neither_discord_nor_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, storage, storage.facade; "
        "bad = [m for m in ('discord', 'torch', 'bot') if m in sys.modules]; "
        "assert not bad, bad"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=False
    )
    assert result.returncode == 0, result.stderr


async def test_lock_held_by_another_process_is_retried_then_reported(tmp_path: Path) -> None:
    storage = await Storage.open(tmp_path, busy_timeout=0.05)
    other = sqlite3.connect(tmp_path / "sdbot.sqlite3", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseBusy, match="stayed locked by another process"):
            await storage.jobs.create(new_job())
        # Released while we wait: the retry gets through.
        asyncio.get_running_loop().call_later(0.1, other.execute, "ROLLBACK")
        job = await storage.jobs.create(new_job())
        assert (await storage.jobs.get(job.id)).state is JobState.QUEUED
    finally:
        other.close()
        await storage.close()


async def test_cancelled_transactions_leave_nothing_behind(tmp_path: Path) -> None:
    storage = await Storage.open(tmp_path, images_per_hour=1000)

    async def accept_slowly(delay: float) -> None:
        async with storage.db.transaction() as session:
            await insert_job(session, new_job(), START)
            await asyncio.sleep(delay)

    try:
        tasks: list[asyncio.Task[object]] = [
            asyncio.create_task(accept_slowly(0.01)) for _ in range(5)
        ]
        tasks += [asyncio.create_task(storage.accept(new_job(), images=1)) for _ in range(20)]
        for _ in range(3):
            await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert not storage.db._conn.in_transaction
        # Every job accepted has its reservation and every reservation its job.
        orphans = await storage.db.one(
            "SELECT (SELECT COUNT(*) FROM rate_usage WHERE job_id NOT IN (SELECT id FROM jobs))"
            " + (SELECT COUNT(*) FROM jobs j WHERE j.created_at != ? AND NOT EXISTS "
            "(SELECT 1 FROM rate_usage u WHERE u.job_id = j.id))",
            (START,),
        )
        assert orphans is not None and orphans[0] == 0
        await storage.jobs.create(new_job())  # the connection still works
    finally:
        await storage.close()


async def test_a_failed_commit_rolls_back_and_later_writes_stick(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "db.sqlite3")
    try:
        await db.run("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        await db.run("CREATE TABLE child (p INTEGER REFERENCES t(x) DEFERRABLE INITIALLY DEFERRED)")
        with pytest.raises(sqlite3.IntegrityError):
            async with db.transaction() as session:
                await session.run("INSERT INTO child (p) VALUES (42)")  # fails at COMMIT
        await db.run("INSERT INTO t (x) VALUES (1)")
        async with db.transaction() as session:
            await session.run("INSERT INTO t (x) VALUES (2)")
        rows = await db.all("SELECT x FROM t ORDER BY x")
        assert [r["x"] for r in rows] == [1, 2]
        assert await db.all("SELECT * FROM child") == []
    finally:
        await db.close()
