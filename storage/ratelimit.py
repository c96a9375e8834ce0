"""Image quotas per user over a rolling hour and a rolling day, kept in SQLite.

Every reservation is a row (`rate_usage`), so a restart forgets nothing. A
reservation checks and records in one `BEGIN IMMEDIATE` transaction, so any
number of concurrent requests from one user never go over the limit.

Usage counts per user across guilds (the GPU is one); the limit that applies is
the guild's override when it has one, else the bot's. A limit of 0 means none.
Members with one of the guild's exempt roles are recorded but never refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from storage.database import Database, Session
from storage.errors import InvalidValue, RateLimited
from storage.guilds import load_guild_config

HOUR = 3600.0
DAY = 86400.0
MAX_IMAGES_PER_RESERVATION = 1000


@dataclass(frozen=True)
class Quota:
    """Where a user stands. `*_left` and `*_limit` are None where there is no limit.

    `next_free_at`: when the number of images left next grows (the oldest counted
    image in the binding window leaves it), None when nothing is counted.
    `retry_at`: when a refused request for `requested` images would fit; None when
    it fits now or can never fit.
    """

    allowed: bool
    requested: int
    hour_limit: int | None
    day_limit: int | None
    hour_used: int
    day_used: int
    hour_left: int | None
    day_left: int | None
    next_free_at: float | None
    retry_at: float | None
    exempt: bool = False


@dataclass(frozen=True)
class Reservation:
    """Images counted against a user; hand it back to `refund` if the job never ran.

    `quota` is where the user stands after this reservation.
    """

    id: int
    user_id: int
    guild_id: int | None
    images: int
    at: float
    quota: Quota


@dataclass(frozen=True)
class _Window:
    seconds: float
    limit: int | None
    entries: Sequence[tuple[float, int]]  # (at, images) inside the window, oldest first

    @property
    def used(self) -> int:
        return sum(n for _, n in self.entries)

    @property
    def left(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used)

    def fits_at(self, images: int, now: float) -> float | None:
        """The earliest time `images` more fit in this window; None if never."""
        if self.limit is None:
            return now
        if images > self.limit:
            return None
        need = self.used + images - self.limit
        if need <= 0:
            return now
        freed = 0
        for at, n in self.entries:
            freed += n
            if freed >= need:
                return max(now, at + self.seconds)
        return None


@dataclass(frozen=True)
class _Standing:
    """A user's limits and counted usage (the last day's, oldest first) at one moment."""

    hour_limit: int | None
    day_limit: int | None
    exempt: bool
    entries: tuple[tuple[float, int], ...]

    def adding(self, at: float, images: int) -> _Standing:
        entries = tuple(sorted((*self.entries, (at, images)), key=lambda e: e[0]))
        return _Standing(self.hour_limit, self.day_limit, self.exempt, entries)

    def quota(self, images: int, now: float) -> Quota:
        hour = _Window(
            HOUR,
            self.hour_limit,
            [e for e in self.entries if e[0] > now - HOUR],
        )
        day = _Window(DAY, self.day_limit, self.entries)
        windows = (hour, day)
        allowed = all(w.limit is None or w.used + images <= w.limit for w in windows)
        fits = [w.fits_at(images, now) for w in windows]
        retry_at = None
        if not allowed and all(t is not None for t in fits):
            retry_at = max(t for t in fits if t is not None)
        return Quota(
            allowed=allowed,
            requested=images,
            hour_limit=hour.limit,
            day_limit=day.limit,
            hour_used=hour.used,
            day_used=day.used,
            hour_left=hour.left,
            day_left=day.left,
            next_free_at=_next_free(windows, now),
            retry_at=retry_at,
            exempt=self.exempt,
        )


def _limit(override: int | None, default: int) -> int | None:
    value = default if override is None else override
    return value if value > 0 else None


class RateLimiter:
    """Checks and records image quotas; `images_per_hour`/`images_per_day` 0 means no limit."""

    def __init__(self, db: Database, *, images_per_hour: int, images_per_day: int) -> None:
        for name, value in (
            ("images_per_hour", images_per_hour),
            ("images_per_day", images_per_day),
        ):
            if value < 0:
                raise InvalidValue(name, f"{name} must be 0 (no limit) or more; got {value}")
        self._db = db
        self.images_per_hour = images_per_hour
        self.images_per_day = images_per_day

    async def _standing(
        self,
        session: Session,
        user_id: int,
        guild_id: int | None,
        role_ids: Iterable[int],
        now: float,
    ) -> _Standing:
        hour_override = day_override = None
        exempt = False
        if guild_id is not None:
            config = await load_guild_config(session, guild_id)
            exempt = config.is_exempt(role_ids)
            hour_override, day_override = config.images_per_hour, config.images_per_day
        rows = await session.all(
            "SELECT at, images FROM rate_usage WHERE user_id = ? AND at > ? ORDER BY at, id",
            (user_id, now - DAY),
        )
        return _Standing(
            hour_limit=None if exempt else _limit(hour_override, self.images_per_hour),
            day_limit=None if exempt else _limit(day_override, self.images_per_day),
            exempt=exempt,
            entries=tuple((float(r["at"]), int(r["images"])) for r in rows),
        )

    async def check(
        self,
        user_id: int,
        guild_id: int | None,
        images: int = 1,
        role_ids: Iterable[int] = (),
        *,
        now: float | None = None,
    ) -> Quota:
        """Would `images` more be allowed now? Records nothing."""
        _check_images(images, minimum=0)
        stamp = self._db.clock() if now is None else now
        async with self._db.read() as session:
            standing = await self._standing(session, user_id, guild_id, role_ids, stamp)
        return standing.quota(images, stamp)

    async def usage(
        self,
        user_id: int,
        guild_id: int | None,
        role_ids: Iterable[int] = (),
        *,
        now: float | None = None,
    ) -> Quota:
        """Used and left in both windows, for /stats."""
        return await self.check(user_id, guild_id, 0, role_ids, now=now)

    async def reserve(
        self,
        user_id: int,
        guild_id: int | None,
        images: int,
        role_ids: Iterable[int] = (),
        *,
        now: float | None = None,
        job_id: int | None = None,
    ) -> Reservation:
        """Count `images` against the user, or raise `RateLimited` and count nothing."""
        async with self._db.transaction() as session:
            return await self.reserve_in(
                session,
                user_id,
                guild_id,
                images,
                role_ids,
                self._db.clock() if now is None else now,
                job_id,
            )

    async def reserve_in(
        self,
        session: Session,
        user_id: int,
        guild_id: int | None,
        images: int,
        role_ids: Iterable[int],
        now: float,
        job_id: int | None = None,
    ) -> Reservation:
        """`reserve` inside the caller's transaction (see `Storage.accept`)."""
        _check_images(images, minimum=1)
        standing = await self._standing(session, user_id, guild_id, role_ids, now)
        quota = standing.quota(images, now)
        if not quota.allowed:
            _raise_limited(quota)
        row = await session.one(
            "INSERT INTO rate_usage (user_id, guild_id, images, at, job_id) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id",
            (user_id, guild_id, images, now, job_id),
        )
        assert row is not None
        after = standing.adding(now, images).quota(0, now)
        return Reservation(int(row["id"]), user_id, guild_id, images, now, after)

    async def attach(self, reservation: Reservation, job_id: int) -> None:
        """Link a reservation to the job it paid for, so `refund_job` can find it later."""
        await self._db.run(
            "UPDATE rate_usage SET job_id = ? WHERE id = ?", (job_id, reservation.id)
        )

    async def refund(self, reservation: Reservation) -> bool:
        """Give the images back (job failed or cancelled before running); False if already done."""
        return bool(await self._db.run("DELETE FROM rate_usage WHERE id = ?", (reservation.id,)))

    async def refund_job(self, job_id: int) -> int:
        """Give back the images reserved for a job (by `Storage.accept`); how many rows went."""
        return await self._db.run("DELETE FROM rate_usage WHERE job_id = ?", (job_id,))

    async def prune(self, *, now: float | None = None) -> int:
        """Drop records older than a day: they no longer count against anything."""
        stamp = self._db.clock() if now is None else now
        return await self._db.run("DELETE FROM rate_usage WHERE at <= ?", (stamp - DAY,))


def _check_images(images: int, *, minimum: int) -> None:
    if isinstance(images, bool) or not isinstance(images, int):
        raise InvalidValue("images", f"images must be a whole number; got {images!r}")
    if not minimum <= images <= MAX_IMAGES_PER_RESERVATION:
        raise InvalidValue(
            "images",
            f"images must be between {minimum} and {MAX_IMAGES_PER_RESERVATION}; got {images}",
        )


def _next_free(windows: Sequence[_Window], now: float) -> float | None:
    limited = [w for w in windows if w.limit is not None and w.entries]
    if not limited:
        return None
    tightest = min(w.left or 0 for w in limited)
    binding = [w for w in limited if (w.left or 0) == tightest]
    return max(w.entries[0][0] + w.seconds for w in binding)


def _raise_limited(quota: Quota) -> None:
    windows = [
        (name, limit, left)
        for name, limit, left in (
            ("images per hour", quota.hour_limit, quota.hour_left),
            ("images per day", quota.day_limit, quota.day_left),
        )
        if limit is not None and left is not None and left < quota.requested
    ]
    # A request bigger than a limit itself names that limit: waiting will not help.
    windows.sort(key=lambda w: quota.requested <= w[1])
    if not windows:
        raise AssertionError("refused without a binding limit")
    name, limit, left = windows[0]
    never = quota.requested > limit or quota.retry_at is None
    raise RateLimited(
        rule=name,
        limit=limit,
        left=left,
        requested=quota.requested,
        next_free_epoch=None if never else math.ceil(quota.retry_at or 0),
    )
