"""Fixtures for storage tests: a fresh database in tmp_path per test and a settable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage import NewJob, Storage

START = 1_700_000_000.0


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def storage(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Storage]:
    opened = await Storage.open(
        tmp_path / "data", images_per_hour=10, images_per_day=25, clock=clock
    )
    try:
        yield opened
    finally:
        await opened.close()


def new_job(user_id: int = 100, **changes: Any) -> NewJob:
    """A plausible accepted /imagine request; `changes` override any field."""
    values: dict[str, Any] = {
        "user_id": user_id,
        "guild_id": 200,
        "channel_id": 300,
        "request": {"prompt": "a red fox in snow", "count": 2, "seed": 42, "steps": 20},
        "interaction_id": 400,
        "interaction_token": "tok",
        "interaction_created_at": START,
    }
    values.update(changes)
    return NewJob(**values)
