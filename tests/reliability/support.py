"""Helpers shared by the reliability tests and `bench/load.py`.

Reading the SQLite file the way an operator would (a separate read-only connection),
finding each job's result message on the fake Discord, and running `sdbot run` as a
real subprocess pointed at a `FakeDiscord`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from tests.support.fake_discord import FakeDiscord, FakeMessage, InteractionRecord

TABLES = ("jobs", "rate_usage", "images", "user_defaults", "guild_config")
_JOB_ID = re.compile(r"\*\*#(\d+)\*\*")


# -- the database, as an operator sees it -------------------------------------------------


def _connect(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def row_counts(db_path: Path) -> dict[str, int]:
    """Rows per table: the fingerprint "nothing was written" compares."""
    with contextlib.closing(_connect(db_path)) as conn:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}


def jobs(db_path: Path) -> dict[int, sqlite3.Row]:
    """Every job row by id."""
    with contextlib.closing(_connect(db_path)) as conn:
        return {r["id"]: r for r in conn.execute("SELECT * FROM jobs ORDER BY id")}


def image_rows(db_path: Path) -> list[sqlite3.Row]:
    with contextlib.closing(_connect(db_path)) as conn:
        return list(conn.execute("SELECT * FROM images ORDER BY job_id, idx"))


def orphans(data_dir: Path) -> list[str]:
    """What an unclean stop leaves behind: running jobs, done jobs never posted, image rows
    without files, files without rows, and temporary files."""
    db_path = data_dir / "sdbot.sqlite3"
    problems = [
        f"job {i} is {r['state']}" for i, r in jobs(db_path).items() if r["state"] == "running"
    ]
    problems += [
        f"job {i} is done but was never delivered"
        for i, r in jobs(db_path).items()
        if r["state"] == "done" and r["delivered_at"] is None
    ]
    root = data_dir / "images"
    recorded = {r["path"] for r in image_rows(db_path) if r["deleted_at"] is None}
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    problems += [f"image row {p} has no file" for p in sorted(recorded - on_disk)]
    problems += [f"file {p} has no image row" for p in sorted(on_disk - recorded)]
    return problems


# -- what users saw ------------------------------------------------------------------------


def job_id(record: InteractionRecord) -> int:
    """The job an accepted /imagine (or button) started: `**#N**` in its first message."""
    assert record.message is not None, f"interaction {record.id} has no message"
    first = record.message.versions[0].content if record.message.versions else ""
    match = _JOB_ID.search(first) or _JOB_ID.search(record.message.content)
    assert match is not None, f"no job id in {record.message.content!r}"
    return int(match[1])


def result_messages(fake: FakeDiscord, job: int) -> list[FakeMessage]:
    """Messages that at any time carried job `job`'s result buttons (deleted ones too),
    except the copies a member asked for with /show."""
    marker = json.dumps(f"sdbot:reroll:{job}:0")
    return [
        m
        for m in list(fake.state.messages.values())
        if any(marker in json.dumps(v.components) for v in m.versions) and not _shown(fake, m)
    ]


def _shown(fake: FakeDiscord, message: FakeMessage) -> bool:
    """Whether `message` answers a /show command."""
    ident = (message.interaction_metadata or {}).get("id")
    record = fake.state.interactions.get(int(ident)) if ident else None
    return record is not None and record.payload.get("data", {}).get("name") == "show"


def delivered_once(fake: FakeDiscord, job_ids: list[int]) -> dict[int, int]:
    """Job id -> number of result messages, for the jobs not delivered exactly once."""
    counts = {j: len(result_messages(fake, j)) for j in job_ids}
    return {j: n for j, n in counts.items() if n != 1}


async def wait_delivered(fake: FakeDiscord, job_ids: list[int], timeout: float = 60.0) -> None:  # noqa: ASYNC109
    """Wait until every job in `job_ids` has a result message."""

    def done() -> bool:
        return all(result_messages(fake, j) for j in job_ids)

    missing = lambda: [j for j in job_ids if not result_messages(fake, j)]  # noqa: E731
    try:
        await fake.wait_until(done, timeout, "every job's result")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; still missing: {missing()}") from None


def lost_jobs(fake: FakeDiscord, db_path: Path) -> list[str]:
    """Every job the database knows, checked against what the fake shows: a done job has
    exactly one result message and is recorded as delivered; any other job has none, and
    none is left running. (Queued jobs are the test's business: it may stop mid-queue.)"""
    problems = []
    for job, row in jobs(db_path).items():
        shown = len(result_messages(fake, job))
        if row["state"] == "done" and (shown != 1 or row["delivered_at"] is None):
            problems.append(
                f"#{job} done, {shown} result messages, delivered {row['delivered_at']}"
            )
        elif row["state"] != "done" and shown:
            problems.append(f"#{job} {row['state']} but {shown} result messages")
        elif row["state"] == "running":
            problems.append(f"#{job} left running")
    return problems


def progress_steps(message: FakeMessage) -> list[int]:
    """The step numbers a progress message showed, in the order of its versions."""
    steps = []
    for version in message.versions:
        match = re.search(r"step (\d+)/\d+", version.content)
        if match:
            steps.append(int(match[1]))
    return steps


# -- `sdbot run` as a subprocess -----------------------------------------------------------


def bot_env(fake: FakeDiscord, data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a bot pointed at `fake`: nothing inherited that sdbot reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDBOT_", "DISCORD_"))}
    env.update(
        DISCORD_TOKEN=fake.token,
        SDBOT_DISCORD_API_URL=fake.api_url,
        SDBOT_DISCORD_GATEWAY_URL=fake.gateway_url,
        SDBOT_MODEL="tiny",
        SDBOT_DEVICE="cpu",
        SDBOT_DEV_GUILD_ID=str(fake.guild.id),
        SDBOT_DATA_DIR=str(data_dir),
        SDBOT_PROGRESS_INTERVAL="0.2",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


class BotProcess:
    """`python -m bot.cli run` in a subprocess; stdout and stderr go to `log_path`.

    Run from `cwd` (a temporary folder), so no `.env` of the checkout is read.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        cwd: Path,
        argv: list[str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.argv = argv or [sys.executable, "-m", "bot.cli", "run"]
        self.preexec_fn = preexec_fn
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.started_at = 0.0

    async def start(self) -> BotProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=self.preexec_fn,
        )
        self.started_at = time.monotonic()
        # The parent writes the log: a child that may not grow files can still report.
        self._reader = asyncio.create_task(self._copy_output())
        return self

    async def _copy_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self._open_log() as log:
            while line := await self.proc.stdout.readline():
                log.write(line)
                log.flush()

    def _open_log(self) -> BinaryIO:
        return self.log_path.open("ab")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_log(self, text: str, timeout: float = 120.0) -> None:  # noqa: ASYNC109
        """Wait until `text` is in the log; fail early (with the log) if the process exits."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.proc.returncode is not None:
                raise AssertionError(
                    f"sdbot exited with {self.proc.returncode} before logging {text!r}:\n"
                    + self.log()[-4000:]
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"sdbot did not log {text!r} in {timeout} s:\n{self.log()[-4000:]}"
                )
            await asyncio.sleep(0.1)

    async def wait_ready(self, timeout: float = 120.0) -> None:  # noqa: ASYNC109
        await self.wait_log("logged in as", timeout)

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = 60.0) -> int:  # noqa: ASYNC109
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
            if self._reader is not None:
                await asyncio.wait_for(self._reader, 10)
            return code
        except TimeoutError:
            raise TimeoutError(
                f"sdbot did not exit within {timeout} s:\n{self.log()[-4000:]}"
            ) from None

    async def ensure_stopped(self) -> None:
        """Kill the process if it still runs (test teardown)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reader, 10)


def assert_no_secret(text: str, secret: str, where: str) -> None:
    """`secret` must not appear in `text`, whole or as its first or last 12 characters."""
    pieces = {secret, secret[:12], secret[-12:]}
    leaked = [p for p in pieces if p and p in text]
    assert not leaked, f"the bot token leaked into {where}"


async def poll(predicate: Callable[[], Any], timeout: float, what: str) -> Any:  # noqa: ASYNC109
    """Poll `predicate` (e.g. a database query) every 50 ms until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_recorded(db_path: Path, job_ids: list[int], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Wait until the database records every job in `job_ids` as delivered."""

    def recorded() -> bool:
        rows = jobs(db_path)
        return all(rows[j]["delivered_at"] is not None for j in job_ids)

    await poll(recorded, timeout, f"jobs {job_ids} recorded as delivered")
