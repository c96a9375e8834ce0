"""`Storage`: opens the database and images directory and builds every store on them."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from storage.database import Clock, Database
from storage.errors import DatabaseUnavailable
from storage.files import remove_stray_temps
from storage.guilds import GuildConfigStore
from storage.images import ImageStore, RetentionReport
from storage.jobs import JobStore, insert_job
from storage.ratelimit import RateLimiter, Reservation
from storage.records import JobRecord, NewJob
from storage.settings import UserSettingsStore

DATABASE_NAME = "sdbot.sqlite3"
IMAGES_DIR_NAME = "images"
STRAY_TEMP_AGE = 3600.0  # a temporary image file this old belongs to no live write


@dataclass(frozen=True)
class Accepted:
    """A request that passed the rate limit and is now a queued job."""

    job: JobRecord
    reservation: Reservation


class Storage:
    """Everything sdbot remembers, under one data directory.

    `jobs`, `images`, `settings`, `limits` and `guilds` share one connection.
    """

    def __init__(self, db: Database, images_dir: Path, limits: RateLimiter) -> None:
        self.db = db
        self.jobs = JobStore(db)
        self.images = ImageStore(db, images_dir)
        self.settings = UserSettingsStore(db)
        self.guilds = GuildConfigStore(db)
        self.limits = limits

    @classmethod
    async def open(
        cls,
        data_dir: Path | str,
        *,
        images_per_hour: int = 40,
        images_per_day: int = 200,
        clock: Clock = time.time,
        busy_timeout: float = 5.0,
        synchronous: str = "NORMAL",
    ) -> Storage:
        """Open (creating and upgrading as needed) `data_dir/sdbot.sqlite3` and `data_dir/images/`.

        Raises `DatabaseUnavailable` if the directory cannot be written and
        `MigrationError` if the schema cannot be brought up to date.
        """
        data_dir = Path(data_dir)
        images_dir = data_dir / IMAGES_DIR_NAME
        try:
            images_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailable(images_dir, exc.strerror or str(exc)) from exc
        db = await Database.open(
            data_dir / DATABASE_NAME,
            clock=clock,
            busy_timeout=busy_timeout,
            synchronous=synchronous,
        )
        try:
            limits = RateLimiter(db, images_per_hour=images_per_hour, images_per_day=images_per_day)
            await limits.prune()
        except BaseException:
            await db.close()
            raise
        return cls(db, images_dir, limits)

    async def accept(
        self,
        new: NewJob,
        images: int,
        role_ids: Iterable[int] = (),
        *,
        now: float | None = None,
    ) -> Accepted:
        """Reserve `images` against the user's quota and insert the job, both or neither.

        Raises `RateLimited` (nothing recorded) or `JobNotFound` for a missing parent.
        Give the images back with `limits.refund_job(job.id)` if it fails before running.
        """
        stamp = self.db.clock() if now is None else now
        async with self.db.transaction() as session:
            job = await insert_job(session, new, stamp)
            reservation = await self.limits.reserve_in(
                session, new.user_id, new.guild_id, images, role_ids, stamp, job_id=job.id
            )
        return Accepted(job, reservation)

    async def enforce_retention(
        self,
        *,
        max_age: float | None = None,
        max_total_bytes: int | None = None,
        now: float | None = None,
    ) -> RetentionReport:
        """Expire image files by age and total size; init images older than `max_age` too."""
        stamp = self.db.clock() if now is None else now
        report = await self.images.enforce_retention(
            max_age=max_age, max_total_bytes=max_total_bytes, now=stamp
        )
        if max_age is not None:
            await self.jobs.drop_init_images(finished_before=stamp - max_age)
        # File times are wall-clock times, whatever clock the database was given.
        strays = await asyncio.to_thread(
            remove_stray_temps, self.images.root, time.time() - STRAY_TEMP_AGE
        )
        return dataclasses.replace(report, stray_temps=strays)

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> Storage:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
