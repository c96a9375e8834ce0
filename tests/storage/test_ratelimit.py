"""Rate limits: rolling windows, the reset times given, concurrency, overrides, refunds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage import InvalidValue, RateLimited, Storage
from storage.ratelimit import HOUR
from tests.storage.conftest import START, FakeClock, new_job

USER = 100
GUILD = 200


async def test_quota_counts_down_and_refuses_with_reset_time(
    storage: Storage, clock: FakeClock
) -> None:
    first = await storage.limits.reserve(USER, GUILD, 4)
    assert (first.quota.hour_left, first.quota.day_left) == (6, 21)
    clock.advance(600)
    second = await storage.limits.reserve(USER, GUILD, 6)
    assert second.quota.hour_left == 0
    assert second.quota.next_free_at == START + HOUR  # the first 4 leave the window then
    with pytest.raises(RateLimited) as info:
        await storage.limits.reserve(USER, GUILD, 1)
    error = info.value
    assert (error.rule, error.limit, error.left) == ("images per hour", 10, 0)
    assert error.next_free_epoch == int(START + HOUR)
    assert str(error) == (
        f"rate limit: 10 images per hour; you have 0 left, the next frees at {int(START + HOUR)}"
    )
    # 5 images need both reservations' worth of time to pass.
    with pytest.raises(RateLimited) as big:
        await storage.limits.reserve(USER, GUILD, 5)
    assert big.value.next_free_epoch == int(START + 600 + HOUR)
    # Refused requests recorded nothing.
    assert (await storage.limits.usage(USER, GUILD)).hour_used == 10


async def test_rolling_hour_frees_exactly_on_time(storage: Storage, clock: FakeClock) -> None:
    await storage.limits.reserve(USER, GUILD, 10)
    clock.advance(HOUR - 1)
    assert not (await storage.limits.check(USER, GUILD, 1)).allowed
    clock.advance(1)
    quota = await storage.limits.check(USER, GUILD, 10)
    assert quota.allowed and quota.hour_left == 10 and quota.day_used == 10


async def test_day_limit_binds_after_hours(storage: Storage, clock: FakeClock) -> None:
    for _ in range(2):
        await storage.limits.reserve(USER, GUILD, 10)
        clock.advance(HOUR)
    await storage.limits.reserve(USER, GUILD, 5)  # 25: the day is full
    clock.advance(HOUR)
    with pytest.raises(RateLimited) as info:
        await storage.limits.reserve(USER, GUILD, 1)
    assert info.value.rule == "images per day" and info.value.left == 0
    assert info.value.next_free_epoch == int(START + 24 * HOUR)
    usage = await storage.limits.usage(USER, GUILD)
    assert (usage.hour_left, usage.day_left) == (10, 0)
    assert usage.next_free_at == START + 24 * HOUR


async def test_request_bigger_than_the_limit_never_fits(storage: Storage) -> None:
    with pytest.raises(RateLimited, match="asks for 11, more than the limit allows") as info:
        await storage.limits.reserve(USER, GUILD, 11)
    assert info.value.next_free_epoch is None


async def test_fifty_concurrent_reservations_never_overshoot(storage: Storage) -> None:
    results = await asyncio.gather(
        *(storage.limits.reserve(USER, GUILD, 1) for _ in range(50)), return_exceptions=True
    )
    granted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert len(granted) == 10 and len(refused) == 40
    assert (await storage.limits.usage(USER, GUILD)).hour_used == 10


async def test_two_connections_never_overshoot(tmp_path: Path, clock: FakeClock) -> None:
    """Two processes' worth of connections on one file: BEGIN IMMEDIATE serialises them."""
    a = await Storage.open(tmp_path, images_per_hour=10, clock=clock)
    b = await Storage.open(tmp_path, images_per_hour=10, clock=clock)
    try:
        results = await asyncio.gather(
            *(s.limits.reserve(USER, GUILD, 1) for _ in range(15) for s in (a, b)),
            return_exceptions=True,
        )
        assert sum(not isinstance(r, BaseException) for r in results) == 10
        assert all(isinstance(r, RateLimited) for r in results if isinstance(r, BaseException))
    finally:
        await a.close()
        await b.close()


async def test_usage_survives_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    first = await Storage.open(tmp_path, images_per_hour=10, clock=clock)
    await first.limits.reserve(USER, GUILD, 9)
    await first.close()
    clock.advance(60)
    second = await Storage.open(tmp_path, images_per_hour=10, clock=clock)
    try:
        with pytest.raises(RateLimited, match="you have 1 left"):
            await second.limits.reserve(USER, GUILD, 2)
    finally:
        await second.close()


async def test_refund_gives_images_back_once(storage: Storage) -> None:
    reservation = await storage.limits.reserve(USER, GUILD, 10)
    assert await storage.limits.refund(reservation)
    assert not await storage.limits.refund(reservation)
    assert (await storage.limits.usage(USER, GUILD)).hour_left == 10


async def test_guild_override_and_exempt_roles(storage: Storage) -> None:
    await storage.guilds.update(GUILD, images_per_hour=3, exempt_role_ids=[77])
    with pytest.raises(RateLimited, match="rate limit: 3 images per hour"):
        await storage.limits.reserve(USER, GUILD, 4, role_ids=[5])
    exempt = await storage.limits.reserve(USER, GUILD, 40, role_ids=[5, 77])
    assert exempt.quota.exempt and exempt.quota.hour_left is None
    # Usage counts per user across guilds; another guild's (default) limit applies there.
    with pytest.raises(RateLimited, match="10 images per hour"):
        await storage.limits.reserve(USER, GUILD + 1, 1)
    # In DMs there is no guild: the bot's limits.
    assert (await storage.limits.usage(USER + 1, None)).hour_limit == 10


async def test_zero_means_no_limit(storage: Storage) -> None:
    await storage.guilds.update(GUILD, images_per_hour=0, images_per_day=0)
    quota = (await storage.limits.reserve(USER, GUILD, 500)).quota
    assert quota.hour_limit is None and quota.day_left is None and quota.next_free_at is None


async def test_bad_image_counts_are_refused(storage: Storage) -> None:
    with pytest.raises(InvalidValue, match="images must be between 1 and 1000; got 0"):
        await storage.limits.reserve(USER, GUILD, 0)


async def test_prune_drops_only_expired_usage(storage: Storage, clock: FakeClock) -> None:
    await storage.limits.reserve(USER, GUILD, 2)
    clock.advance(25 * HOUR)
    await storage.limits.reserve(USER, GUILD, 3)
    assert await storage.limits.prune() == 1
    assert (await storage.limits.usage(USER, GUILD)).day_used == 3


async def test_attach_then_refund_job(storage: Storage) -> None:
    reservation = await storage.limits.reserve(USER, GUILD, 6)
    job = await storage.jobs.create(new_job(USER))
    await storage.limits.attach(reservation, job.id)
    assert await storage.limits.refund_job(job.id) == 1
    assert await storage.limits.refund_job(job.id) == 0
    assert not await storage.limits.refund(reservation)
    assert (await storage.limits.usage(USER, GUILD)).hour_used == 0


async def test_accept_is_reservation_and_job_or_neither(storage: Storage) -> None:
    accepted = await storage.accept(new_job(USER), images=8)
    assert accepted.reservation.quota.hour_left == 2
    with pytest.raises(RateLimited):
        await storage.accept(new_job(USER), images=4)
    total = await storage.db.one("SELECT COUNT(*) FROM jobs")
    assert total is not None and total[0] == 1
    assert await storage.limits.refund_job(accepted.job.id) == 1
    assert (await storage.limits.usage(USER, GUILD)).hour_left == 10
