"""The job types: what the bot hands in (`NewJob`) and what it gets back (`JobRecord`)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

INTERACTION_TOKEN_TTL = 15 * 60
"""Seconds a Discord interaction token can be used for followups and edits."""


class JobState(StrEnum):
    """Where a job is in its life. Only these moves are allowed:

    queued -> running -> done | failed | cancelled; queued -> failed | cancelled;
    running -> queued (only by crash recovery).
    """

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class Action(StrEnum):
    """What made a job: a slash command or a button on an earlier job."""

    IMAGINE = "imagine"
    UPSCALE = "upscale"
    VARIATION = "variation"
    REROLL = "reroll"
    REMIX = "remix"


@dataclass(frozen=True)
class NewJob:
    """An accepted request, as the bot hands it to `JobStore.create`.

    `request` is a JSON-able dict (e.g. `GenerationRequest.to_dict()`); the init
    image, if any, travels apart as bytes. `parent_job_id`/`parent_index` say which
    image of which job a button was pressed on.
    """

    user_id: int
    guild_id: int | None
    channel_id: int
    request: dict[str, Any] = field(hash=False)
    action: Action = Action.IMAGINE
    init_image: bytes | None = field(default=None, repr=False, compare=False)
    interaction_id: int | None = None
    interaction_token: str | None = field(default=None, repr=False)
    interaction_created_at: float | None = None
    parent_job_id: int | None = None
    parent_index: int | None = None


@dataclass(frozen=True)
class JobRecord:
    """A job row. `seeds` is empty until the job is done.

    `init_image` is loaded by `JobStore.get`, `unfinished` and `undelivered`; the
    list queries (history, lineage) leave it None to stay light, and
    `has_init_image` is always right.
    """

    id: int
    user_id: int
    guild_id: int | None
    channel_id: int
    request: dict[str, Any] = field(hash=False)
    action: Action
    state: JobState
    parent_job_id: int | None
    parent_index: int | None
    interaction_id: int | None
    interaction_token: str | None = field(repr=False)
    interaction_created_at: float | None
    progress_message_id: int | None
    result_message_id: int | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    seeds: tuple[int, ...]
    attempts: int
    delivered_at: float | None
    has_init_image: bool
    init_image: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def delivered(self) -> bool:
        return self.delivered_at is not None

    @property
    def interaction_expires_at(self) -> float | None:
        """When the interaction token stops working (then post with the bot token)."""
        if self.interaction_created_at is None:
            return None
        return self.interaction_created_at + INTERACTION_TOKEN_TTL


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a longer list; `page` counts from 1."""

    items: tuple[T, ...]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


JOB_COLUMNS = """
    id, user_id, guild_id, channel_id, request_json, action, state, parent_job_id,
    parent_index, interaction_id, interaction_token, interaction_created_at,
    progress_message_id, result_message_id, created_at, started_at, finished_at, error,
    seeds_json, attempts, delivered_at, init_image IS NOT NULL AS has_init_image
"""
"""Every column a `JobRecord` needs, without the init image blob."""

JOB_COLUMNS_WITH_IMAGE = JOB_COLUMNS + ", init_image"


def job_from_row(row: sqlite3.Row) -> JobRecord:
    keys = row.keys()
    return JobRecord(
        id=row["id"],
        user_id=row["user_id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        request=json.loads(row["request_json"]),
        action=Action(row["action"]),
        state=JobState(row["state"]),
        parent_job_id=row["parent_job_id"],
        parent_index=row["parent_index"],
        interaction_id=row["interaction_id"],
        interaction_token=row["interaction_token"],
        interaction_created_at=row["interaction_created_at"],
        progress_message_id=row["progress_message_id"],
        result_message_id=row["result_message_id"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        seeds=tuple(json.loads(row["seeds_json"])) if row["seeds_json"] else (),
        attempts=row["attempts"],
        delivered_at=row["delivered_at"],
        has_init_image=bool(row["has_init_image"]),
        init_image=row["init_image"] if "init_image" in keys else None,
    )
