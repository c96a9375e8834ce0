"""200 /imagine at once: every interaction is answered within Discord's 3 seconds."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.bot.conftest import BotStarter
from tests.conftest import Faults
from tests.support.fake_discord import InteractionRecord

USERS = 50
PER_USER = 4
DEADLINE = 3.0


def kind_of(record: InteractionRecord) -> str:
    """What the bot answered: a progress message, or which limit refused it."""
    if not record.ephemeral:
        assert "queued" in record.content or "step" in record.content, record.content
        assert any(cid.startswith("sdbot:cancel:") for cid in record.message.custom_ids)  # type: ignore[union-attr]
        return "accepted"
    for marker, kind in (
        ("per member", "per-user queue limit"),
        ("the queue is full", "queue full"),
        ("images per hour", "rate limit"),
    ):
        if marker in record.content:
            return kind
    raise AssertionError(f"a refusal that names no limit: {record.content!r}")


@pytest.mark.slow
async def test_two_hundred_concurrent_imagines_are_all_answered_in_time(
    start_bot: BotStarter, faults: Faults
) -> None:
    names = [f"member{n:02d}" for n in range(USERS)]
    fake = await start_bot.fake(users=names)
    env = await start_bot(
        fake=fake, queue_size=100, max_per_user=3, images_per_hour=3, progress_interval=1.5
    )
    gate = faults.gate()
    faults.on_batch = lambda jobs: gate.hold()  # nothing finishes: the queue only fills

    def prompt(user: int, n: int) -> str:
        big = user < 10  # these ask for 2 images a time and run into the hourly limit
        return f"load {user}-{n} --size 64x64 --steps 2 --n {2 if big else 1}"

    records = await asyncio.gather(
        *(
            env.imagine(names[user], prompt(user, n))
            for n in range(PER_USER)
            for user in range(USERS)
        )
    )
    assert len(records) == USERS * PER_USER
    await asyncio.gather(*(record.wait_response(timeout=10) for record in records))
    await fake.wait_until(lambda: all(r.message is not None for r in records), timeout=10)

    late = [r.responded_at - r.dispatched_at for r in records if r.responded_at is not None]
    assert max(late) < DEADLINE, f"slowest first callback {max(late):.2f}s"
    assert not [e for r in records for e in r.errors], "a callback came too late (10062)"
    assert not any(r.deferred for r in records), "accepting never needed a defer here"
    kinds = Counter(kind_of(record) for record in records)
    assert set(kinds) == {"accepted", "per-user queue limit", "queue full", "rate limit"}, kinds
    assert kinds["accepted"] == await env.job_count()
    assert kinds["accepted"] <= 100 + 1  # the queue plus the batch held in the GPU thread
    gate.release()
