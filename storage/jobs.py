"""Jobs: one row per accepted request, from the moment it is accepted.

State moves are guarded in SQL (`UPDATE ... WHERE id = ? AND state IN (...)`), so
two racing callers cannot both move a job, and a finished job never runs again.
Each move returns True when this call made it and False when the job was no
longer in a state that allows it (e.g. cancelled while waiting).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from storage.database import Database, Queries
from storage.errors import InvalidValue, JobNotFound
from storage.records import (
    JOB_COLUMNS,
    JOB_COLUMNS_WITH_IMAGE,
    Action,
    JobRecord,
    JobState,
    NewJob,
    Page,
    job_from_row,
)

MAX_ERROR_CHARS = 1000
MAX_PER_PAGE = 100
MAX_LINEAGE_DEPTH = 1000
MAX_ROW_ID = 2**63 - 1  # SQLite's largest INTEGER

_INSERT = """
INSERT INTO jobs (
    user_id, guild_id, channel_id, interaction_id, interaction_token,
    interaction_created_at, request_json, init_image, parent_job_id, parent_index,
    action, state, created_at
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)
RETURNING id
"""


def _request_json(request: dict[str, Any]) -> str:
    if not isinstance(request, dict):
        raise InvalidValue("request", f"request must be a dict; got {type(request).__name__}")
    try:
        return json.dumps(request, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidValue("request", f"request must be JSON-serialisable: {exc}") from exc


def _check_new(new: NewJob) -> None:
    if new.parent_index is not None and new.parent_job_id is None:
        raise InvalidValue("parent_index", "parent_index needs a parent_job_id")
    if new.parent_index is not None and new.parent_index < 0:
        raise InvalidValue(
            "parent_index", f"parent_index must be 0 or more; got {new.parent_index}"
        )


async def insert_job(queries: Queries, new: NewJob, now: float) -> JobRecord:
    """Insert `new` as a queued job (on the database, or in the caller's transaction)."""
    _check_new(new)
    request_json = _request_json(new.request)
    try:
        row = await queries.one(
            _INSERT,
            (
                new.user_id,
                new.guild_id,
                new.channel_id,
                new.interaction_id,
                new.interaction_token,
                new.interaction_created_at,
                request_json,
                new.init_image,
                new.parent_job_id,
                new.parent_index,
                Action(new.action).value,
                now,
            ),
        )
    except sqlite3.IntegrityError as exc:
        if "FOREIGN KEY" in str(exc) and new.parent_job_id is not None:
            raise JobNotFound(new.parent_job_id) from exc
        raise
    assert row is not None
    return JobRecord(
        id=row["id"],
        user_id=new.user_id,
        guild_id=new.guild_id,
        channel_id=new.channel_id,
        request=json.loads(request_json),
        action=Action(new.action),
        state=JobState.QUEUED,
        parent_job_id=new.parent_job_id,
        parent_index=new.parent_index,
        interaction_id=new.interaction_id,
        interaction_token=new.interaction_token,
        interaction_created_at=new.interaction_created_at,
        progress_message_id=None,
        result_message_id=None,
        created_at=now,
        started_at=None,
        finished_at=None,
        error=None,
        seeds=(),
        attempts=0,
        delivered_at=None,
        has_init_image=new.init_image is not None,
        init_image=new.init_image,
    )


class JobStore:
    """Jobs, their state moves, crash recovery, delivery, history and lineage."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _now(self, now: float | None) -> float:
        return self._db.clock() if now is None else now

    async def create(self, new: NewJob, *, now: float | None = None) -> JobRecord:
        """Record an accepted request as a queued job; raises JobNotFound for a missing parent."""
        # One INSERT is atomic on its own: no explicit transaction needed.
        return await insert_job(self._db, new, self._now(now))

    async def get(self, job_id: int, *, with_image: bool = True) -> JobRecord:
        """The job, with its init image unless `with_image` is False; raises JobNotFound."""
        if not 0 < job_id <= MAX_ROW_ID:  # SQLite would raise OverflowError past 2**63 - 1
            raise JobNotFound(job_id)
        columns = JOB_COLUMNS_WITH_IMAGE if with_image else JOB_COLUMNS
        row = await self._db.one(f"SELECT {columns} FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise JobNotFound(job_id)
        return job_from_row(row)

    # -- state moves ---------------------------------------------------------

    async def _move(
        self,
        job_id: int,
        assignments: str,
        params: Sequence[Any],
        from_states: Iterable[JobState],
        *,
        only_if: str = "1",
    ) -> bool:
        """Run a guarded UPDATE (`assignments`, `only_if` are constants, values are params)."""
        states = [s.value for s in from_states]
        marks = ", ".join("?" for _ in states)
        changed = await self._db.run(
            f"UPDATE jobs SET {assignments} WHERE id = ? AND state IN ({marks}) AND {only_if}",
            (*params, job_id, *states),
        )
        if changed:
            return True
        if await self._db.one("SELECT 1 FROM jobs WHERE id = ?", (job_id,)) is None:
            raise JobNotFound(job_id)
        return False

    async def mark_running(self, job_id: int, *, now: float | None = None) -> bool:
        """queued -> running. False if the job was cancelled (or already ran) meanwhile."""
        return await self._move(
            job_id,
            "state = 'running', started_at = ?, attempts = attempts + 1",
            (self._now(now),),
            [JobState.QUEUED],
        )

    async def mark_done(
        self, job_id: int, seeds: Sequence[int], *, now: float | None = None
    ) -> bool:
        """running -> done, recording the seeds used (image i used seeds[i])."""
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise InvalidValue("seeds", f"seeds must be whole numbers; got {list(seeds)!r}")
        return await self._move(
            job_id,
            "state = 'done', finished_at = ?, seeds_json = ?, error = NULL",
            (self._now(now), json.dumps(list(seeds))),
            [JobState.RUNNING],
        )

    async def mark_failed(self, job_id: int, reason: str, *, now: float | None = None) -> bool:
        """queued | running -> failed, with the reason shown to the user."""
        return await self._move(
            job_id,
            "state = 'failed', finished_at = ?, error = ?",
            (self._now(now), reason[:MAX_ERROR_CHARS]),
            [JobState.QUEUED, JobState.RUNNING],
        )

    async def mark_undeliverable(
        self, job_id: int, reason: str, *, now: float | None = None
    ) -> bool:
        """done (never delivered) -> failed: the result cannot be posted (channel gone,
        no permission). Recovery stops trying to post it."""
        return await self._move(
            job_id,
            "state = 'failed', finished_at = ?, error = ?",
            (self._now(now), reason[:MAX_ERROR_CHARS]),
            [JobState.DONE],
            only_if="delivered_at IS NULL",
        )

    async def cancel(
        self, job_id: int, *, reason: str | None = None, now: float | None = None
    ) -> bool:
        """queued | running -> cancelled. The worker checks the result of `mark_running`."""
        return await self._move(
            job_id,
            "state = 'cancelled', finished_at = ?, error = ?",
            (self._now(now), reason[:MAX_ERROR_CHARS] if reason else None),
            [JobState.QUEUED, JobState.RUNNING],
        )

    async def set_progress_message(self, job_id: int, message_id: int) -> None:
        """Remember the message that shows the job's progress (edited, then replaced)."""
        if not await self._db.run(
            "UPDATE jobs SET progress_message_id = ? WHERE id = ?", (message_id, job_id)
        ):
            raise JobNotFound(job_id)

    async def set_result_message(self, job_id: int, message_id: int) -> None:
        """Remember the message that holds the job's result (for /show and deletes)."""
        if not await self._db.run(
            "UPDATE jobs SET result_message_id = ? WHERE id = ?", (message_id, job_id)
        ):
            raise JobNotFound(job_id)

    async def mark_delivered(
        self, job_id: int, result_message_id: int | None = None, *, now: float | None = None
    ) -> bool:
        """Record that a finished job's result was posted; True for exactly one call.

        Any later call (a retry, a racing coroutine, a restarted bot) gets False.
        With one delivery path per job, post then mark: a crash in between posts
        once more on restart, which beats never posting. Where two paths could
        deliver the same job at once, mark first and post only on True (then
        `set_result_message`). False too for a job that has not finished.
        """
        return await self._move(
            job_id,
            "delivered_at = ?, result_message_id = COALESCE(?, result_message_id)",
            (self._now(now), result_message_id),
            [s for s in JobState if s.finished],
            only_if="delivered_at IS NULL",
        )

    # -- recovery ------------------------------------------------------------

    async def requeue(self, job_ids: Iterable[int]) -> int:
        """running -> queued for jobs a graceful stop interrupted; how many moved.

        An interrupted run was no crash, so it does not count against `unfinished`'s
        `max_attempts`; the next start runs these jobs again.
        """
        ids = list(job_ids)
        if not ids:
            return 0
        marks = ", ".join("?" for _ in ids)
        return await self._db.run(
            "UPDATE jobs SET state = 'queued', started_at = NULL, "
            f"attempts = MAX(attempts - 1, 0) WHERE state = 'running' AND id IN ({marks})",
            ids,
        )

    async def unfinished(
        self, *, max_attempts: int = 3, now: float | None = None
    ) -> list[JobRecord]:
        """Jobs a crash left queued or running, oldest first, all queued again.

        Call once at start, before the worker runs. A job that was already running
        `max_attempts` times is failed instead (it may be what crashed the bot);
        it then shows up in `undelivered([JobState.FAILED])`.
        """
        stamp = self._now(now)
        async with self._db.transaction() as session:
            await session.run(
                "UPDATE jobs SET state = 'failed', finished_at = ?, error = ? "
                "WHERE state = 'running' AND attempts >= ?",
                (
                    stamp,
                    f"stopped by a restart {max_attempts} times; not tried again",
                    max_attempts,
                ),
            )
            await session.run(
                "UPDATE jobs SET state = 'queued', started_at = NULL WHERE state = 'running'"
            )
            rows = await session.all(
                f"SELECT {JOB_COLUMNS_WITH_IMAGE} FROM jobs WHERE state = 'queued' ORDER BY id"
            )
        return [job_from_row(r) for r in rows]

    async def undelivered(self, states: Iterable[JobState] = (JobState.DONE,)) -> list[JobRecord]:
        """Finished jobs whose result was never posted, oldest first: re-post, don't re-run."""
        wanted = [JobState(s).value for s in states]
        if not wanted or not all(JobState(s).finished for s in wanted):
            raise InvalidValue("states", f"states must be finished states; got {wanted}")
        marks = ", ".join("?" for _ in wanted)
        rows = await self._db.all(
            f"SELECT {JOB_COLUMNS_WITH_IMAGE} FROM jobs "
            f"WHERE delivered_at IS NULL AND state IN ({marks}) ORDER BY id",
            wanted,
        )
        return [job_from_row(r) for r in rows]

    async def active_for_user(self, user_id: int) -> list[JobRecord]:
        """A user's queued and running jobs, oldest first (for /cancel and /queue)."""
        rows = await self._db.all(
            f"SELECT {JOB_COLUMNS} FROM jobs "
            "WHERE user_id = ? AND state IN ('queued', 'running') ORDER BY id",
            (user_id,),
        )
        return [job_from_row(r) for r in rows]

    # -- history and lineage -------------------------------------------------

    async def history(self, user_id: int, *, page: int = 1, per_page: int = 10) -> Page[JobRecord]:
        """A user's jobs, newest first; `page` counts from 1 (init images not loaded)."""
        if page < 1:
            raise InvalidValue("page", f"page must be 1 or more; got {page}")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise InvalidValue(
                "per_page", f"per_page must be between 1 and {MAX_PER_PAGE}; got {per_page}"
            )
        if page > MAX_ROW_ID // per_page:
            raise InvalidValue("page", f"page must be at most {MAX_ROW_ID // per_page}; got {page}")
        async with self._db.read() as session:
            count = await session.one("SELECT COUNT(*) FROM jobs WHERE user_id = ?", (user_id,))
            rows = await session.all(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE user_id = ? "
                "ORDER BY id DESC LIMIT ? OFFSET ?",
                (user_id, per_page, (page - 1) * per_page),
            )
        total = int(count[0]) if count else 0
        return Page(tuple(job_from_row(r) for r in rows), page, per_page, total)

    async def ancestors(self, job_id: int) -> list[JobRecord]:
        """The chain of parents: the direct parent first, the root (an /imagine) last."""
        rows = await self._db.all(
            f"""
            WITH RECURSIVE chain (ancestor_id, depth) AS (
                SELECT parent_job_id, 1 FROM jobs WHERE id = ?
                UNION ALL
                SELECT j.parent_job_id, c.depth + 1
                FROM jobs AS j JOIN chain AS c ON j.id = c.ancestor_id
                WHERE c.depth < ?
            )
            SELECT {JOB_COLUMNS} FROM jobs JOIN chain ON jobs.id = chain.ancestor_id
            ORDER BY chain.depth
            """,
            (job_id, MAX_LINEAGE_DEPTH),
        )
        return [job_from_row(r) for r in rows]

    async def children(self, job_id: int) -> list[JobRecord]:
        """Jobs made from this one's images (upscales, variations, rerolls, remixes)."""
        rows = await self._db.all(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE parent_job_id = ? ORDER BY id", (job_id,)
        )
        return [job_from_row(r) for r in rows]

    # -- housekeeping --------------------------------------------------------

    async def drop_init_images(self, *, finished_before: float) -> int:
        """Forget the init images of jobs finished before that time; how many were dropped."""
        return await self._db.run(
            "UPDATE jobs SET init_image = NULL "
            "WHERE init_image IS NOT NULL AND finished_at IS NOT NULL AND finished_at < ?",
            (finished_before,),
        )
