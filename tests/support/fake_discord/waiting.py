"""Waiting for the fake's state to change, without sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Notifier:
    """Wakes waiters whenever the fake's state changes (a message, a callback, a connection).

    `wait_until` re-checks its predicate after every change, so it sees new messages, edits,
    deletions and interaction responses alike. The fake's wait helpers take a `timeout`
    (ruff's ASYNC109 is silenced for them) because their TimeoutError names what was awaited,
    which an `asyncio.timeout` block around each call would not.
    """

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self,
        predicate: Callable[[], T | None],
        timeout: float,  # noqa: ASYNC109
        what: str = "condition",
    ) -> T:
        """Return the first truthy `predicate()`; TimeoutError naming `what` after `timeout` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue
