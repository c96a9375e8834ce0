"""Typed errors of the storage package.

Every error carries a message a user (or the admin reading the log) can read as
it is: which rule failed and which value broke it. The bot's one error handler
turns them into ephemeral replies.
"""

from __future__ import annotations

from pathlib import Path


class StorageError(Exception):
    """Base class for every error raised by `storage`."""


class DatabaseUnavailable(StorageError):
    """The database file or its directory could not be created or opened."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot open the database at {path}: {reason}")
        self.path = path
        self.reason = reason


class DatabaseBusy(StorageError):
    """Another process held the database's write lock for longer than the busy timeout."""


class MigrationError(StorageError):
    """A schema migration could not be read or applied; the database was left as it was."""

    def __init__(self, version: int, message: str) -> None:
        super().__init__(message)
        self.version = version


class SchemaTooNew(MigrationError):
    """The database was written by a newer sdbot than this one."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            found,
            f"database schema is at version {found} but this sdbot knows versions up to "
            f"{known}; upgrade sdbot or use another SDBOT_DATA_DIR",
        )
        self.found = found
        self.known = known


class InvalidValue(StorageError):
    """A value given to a store broke one of its rules; nothing was written."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class JobNotFound(StorageError):
    """No job has this id."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id} does not exist")
        self.job_id = job_id


class ImageMissing(StorageError):
    """An image of a job is not on disk (never saved, removed by retention, or lost)."""

    def __init__(self, job_id: int, index: int, reason: str) -> None:
        super().__init__(f"image {index + 1} of job {job_id} is not available: {reason}")
        self.job_id = job_id
        self.index = index
        self.reason = reason


class RateLimited(StorageError):
    """A request would go over a user's image quota; nothing was recorded.

    `next_free_epoch` is when enough images free for this request to fit (whole
    epoch seconds, for a Discord `<t:...:R>` timestamp), or None when the request
    can never fit (it asks for more images than the limit itself).
    """

    def __init__(
        self,
        *,
        rule: str,
        limit: int,
        left: int,
        requested: int,
        next_free_epoch: int | None,
    ) -> None:
        if next_free_epoch is None:
            message = (
                f"rate limit: {limit} {rule}; this request asks for {requested}, "
                "more than the limit allows"
            )
        else:
            message = (
                f"rate limit: {limit} {rule}; you have {left} left, "
                f"the next frees at {next_free_epoch}"
            )
        super().__init__(message)
        self.rule = rule
        self.limit = limit
        self.left = left
        self.requested = requested
        self.next_free_epoch = next_free_epoch
