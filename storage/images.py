"""Image files on disk, one row each in `images`, and retention by age and total size.

Files live under the images directory as `<job_id // 1000>/<job_id>-<index>.<ext>`
(the path stored is relative to that directory, so the directory can move).
A file is written atomically first and recorded second; retention removes files
first and marks their rows (`deleted_at`) second, so a crash between the two
leaves at worst a row whose file is gone, which reads as `ImageMissing`.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from storage.database import Database
from storage.errors import ImageMissing, InvalidValue, JobNotFound
from storage.files import remove_files, write_atomic

_EXT = re.compile(r"^[a-z0-9]{1,5}$")
# Shown to users (through ImageMissing): it names the image, never the server's paths.
MISSING_FILE = "its file is missing from disk (removed outside sdbot)"
_COLUMNS = "job_id, idx, path, seed, width, height, bytes, created_at, nsfw, deleted_at"


@dataclass(frozen=True)
class ImageRecord:
    """One output image of a job; `index` counts from 0, `path` is relative to the root."""

    job_id: int
    index: int
    path: str
    seed: int | None
    width: int
    height: int
    bytes: int
    created_at: float
    nsfw: bool
    deleted_at: float | None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


@dataclass(frozen=True)
class RetentionReport:
    """What one retention pass did."""

    removed: int
    removed_bytes: int
    kept: int
    kept_bytes: int
    already_missing: int
    stray_temps: int = 0  # half-written files a killed process left, removed


def _from_row(row: sqlite3.Row) -> ImageRecord:
    return ImageRecord(
        job_id=row["job_id"],
        index=row["idx"],
        path=row["path"],
        seed=row["seed"],
        width=row["width"],
        height=row["height"],
        bytes=row["bytes"],
        created_at=row["created_at"],
        nsfw=bool(row["nsfw"]),
        deleted_at=row["deleted_at"],
    )


class ImageStore:
    """Saves, finds and expires the image files of jobs."""

    def __init__(self, db: Database, root: Path | str) -> None:
        self._db = db
        self.root = Path(root)

    def _absolute(self, record: ImageRecord) -> Path:
        return self.root / record.path

    async def save(
        self,
        job_id: int,
        index: int,
        data: bytes,
        *,
        seed: int | None,
        width: int,
        height: int,
        nsfw: bool = False,
        ext: str = "png",
        now: float | None = None,
    ) -> ImageRecord:
        """Write the file atomically, then record it (saving the same index again replaces it)."""
        if index < 0:
            raise InvalidValue("index", f"image index must be 0 or more; got {index}")
        if not _EXT.match(ext):
            raise InvalidValue("ext", f"ext must be 1-5 lower-case letters or digits; got {ext!r}")
        relative = f"{job_id // 1000:06d}/{job_id}-{index}.{ext}"
        target = self.root / relative
        await asyncio.to_thread(write_atomic, target, data)
        stamp = self._db.clock() if now is None else now
        try:
            await self._db.run(
                f"INSERT INTO images ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL) "
                "ON CONFLICT (job_id, idx) DO UPDATE SET path = excluded.path, "
                "seed = excluded.seed, width = excluded.width, height = excluded.height, "
                "bytes = excluded.bytes, created_at = excluded.created_at, "
                "nsfw = excluded.nsfw, deleted_at = NULL",
                (job_id, index, relative, seed, width, height, len(data), stamp, int(nsfw)),
            )
        except sqlite3.IntegrityError as exc:
            await asyncio.to_thread(remove_files, [target])
            raise JobNotFound(job_id) from exc
        return ImageRecord(
            job_id, index, relative, seed, width, height, len(data), stamp, nsfw, None
        )

    async def get(self, job_id: int, index: int) -> ImageRecord:
        """The record of a live image; raises `ImageMissing` if none or removed."""
        row = await self._db.one(
            f"SELECT {_COLUMNS} FROM images WHERE job_id = ? AND idx = ?", (job_id, index)
        )
        if row is None:
            raise ImageMissing(job_id, index, "the job has no such image")
        record = _from_row(row)
        if record.deleted:
            raise ImageMissing(
                job_id, index, "it was removed (expired to save space, or deleted by its owner)"
            )
        return record

    async def path(self, job_id: int, index: int) -> Path:
        """The absolute path of a live image file; raises `ImageMissing` if it is gone."""
        target = self._absolute(await self.get(job_id, index))
        if not await asyncio.to_thread(target.is_file):
            raise ImageMissing(job_id, index, MISSING_FILE)
        return target

    async def read(self, job_id: int, index: int) -> bytes:
        """The bytes of an image; raises `ImageMissing` if it is gone."""
        target = self._absolute(await self.get(job_id, index))
        try:
            return await asyncio.to_thread(target.read_bytes)
        except FileNotFoundError:
            raise ImageMissing(job_id, index, MISSING_FILE) from None

    async def for_job(self, job_id: int, *, include_deleted: bool = False) -> list[ImageRecord]:
        """A job's images by index (only the live ones unless `include_deleted`)."""
        rows = await self._db.all(
            f"SELECT {_COLUMNS} FROM images WHERE job_id = ? "
            "AND (? OR deleted_at IS NULL) ORDER BY idx",
            (job_id, int(include_deleted)),
        )
        return [_from_row(r) for r in rows]

    async def delete_job_images(self, job_id: int, *, now: float | None = None) -> int:
        """Remove a job's files (the delete button); the rows stay, marked. How many went."""
        live = await self.for_job(job_id)
        await self._remove(live, self._db.clock() if now is None else now)
        return len(live)

    async def total_bytes(self) -> int:
        """Bytes of all live image files."""
        row = await self._db.one(
            "SELECT COALESCE(SUM(bytes), 0) FROM images WHERE deleted_at IS NULL"
        )
        return int(row[0]) if row else 0

    async def enforce_retention(
        self,
        *,
        max_age: float | None = None,
        max_total_bytes: int | None = None,
        now: float | None = None,
    ) -> RetentionReport:
        """Remove images older than `max_age` seconds, then the oldest until the rest fit
        in `max_total_bytes`. Jobs keep their rows; image rows get `deleted_at`."""
        stamp = self._db.clock() if now is None else now
        cutoff = float("-inf") if max_age is None else stamp - max_age
        async with self._db.read() as session:
            aged = [
                _from_row(r)
                for r in await session.all(
                    f"SELECT {_COLUMNS} FROM images WHERE deleted_at IS NULL AND created_at < ? "
                    "ORDER BY created_at, job_id, idx",
                    (cutoff,),
                )
            ]
            rest = await session.one(
                "SELECT COALESCE(SUM(bytes), 0), COUNT(*) FROM images "
                "WHERE deleted_at IS NULL AND created_at >= ?",
                (cutoff,),
            )
            rest_bytes, rest_count = (int(rest[0]), int(rest[1])) if rest else (0, 0)
            oversize: list[ImageRecord] = []
            if max_total_bytes is not None and rest_bytes > max_total_bytes:
                # The oldest rows whose running total is needed to get under the cap.
                oversize = [
                    _from_row(r)
                    for r in await session.all(
                        f"SELECT * FROM (SELECT {_COLUMNS}, SUM(bytes) OVER "
                        "(ORDER BY created_at, job_id, idx) AS running FROM images "
                        "WHERE deleted_at IS NULL AND created_at >= ?) WHERE running - bytes < ?",
                        (cutoff, rest_bytes - max_total_bytes),
                    )
                ]
        doomed = aged + oversize
        missing = await self._remove(doomed, stamp)
        oversize_bytes = sum(r.bytes for r in oversize)
        return RetentionReport(
            removed=len(doomed),
            removed_bytes=sum(r.bytes for r in doomed),
            kept=rest_count - len(oversize),
            kept_bytes=rest_bytes - oversize_bytes,
            already_missing=missing,
        )

    async def _remove(self, records: list[ImageRecord], now: float) -> int:
        """Files first, rows second; returns how many files were already gone."""
        if not records:
            return 0
        missing = await asyncio.to_thread(remove_files, [self._absolute(r) for r in records])
        async with self._db.transaction() as session:
            await session.many(
                "UPDATE images SET deleted_at = ? "
                "WHERE job_id = ? AND idx = ? AND created_at = ? AND deleted_at IS NULL",
                [(now, r.job_id, r.index, r.created_at) for r in records],
            )
        return missing
