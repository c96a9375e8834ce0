"""A fair queue: round-robin across users, bounded in total and per user.

One user's ten jobs cannot starve another's one: users take turns, each turn
taking that user's oldest job. Batches start with the next job in turn order and
fill up with compatible jobs (same `batch_key`), still in turn order.
Not thread-safe: only the event loop touches it.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator

from generation.errors import QueueFull
from generation.jobs import Job


class FairQueue:
    """Jobs waiting for the worker, in fair order."""

    def __init__(self, max_size: int, max_per_user: int) -> None:
        self.max_size = max_size
        self.max_per_user = max_per_user
        # Users in turn order; each holds its jobs oldest first.
        self._users: OrderedDict[str, deque[Job]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, job_id: object) -> bool:
        return any(job.id == job_id for job in self)

    def __iter__(self) -> Iterator[Job]:
        """Jobs in the order they would run if nothing else arrived."""
        lanes = [list(jobs) for jobs in self._users.values()]
        depth = 0
        while True:
            row = [lane[depth] for lane in lanes if depth < len(lane)]
            if not row:
                return
            yield from row
            depth += 1

    def push(self, job: Job, *, force: bool = False) -> int:
        """Add `job`; return its 1-based position. Raise `QueueFull` when over a bound,
        unless `force` (jobs recovered after a restart were accepted already)."""
        if not force:
            self.check_room(job.user)
        lane = self._users.get(job.user)
        if lane is None:
            lane = self._users[job.user] = deque()
        lane.append(job)
        self._size += 1
        return self.position(job.id) or self._size

    def check_room(self, user: str) -> None:
        """Raise `QueueFull` (naming the bound) if `user` could not add a job now."""
        lane = self._users.get(user)
        if lane is not None and len(lane) >= self.max_per_user:
            raise QueueFull(
                f"you already have {len(lane)} jobs waiting; the limit is "
                f"{self.max_per_user} per member. Wait for one to finish or /cancel one.",
                per_user=True,
            )
        if self._size >= self.max_size:
            raise QueueFull(
                f"the queue is full ({self._size} of {self.max_size} jobs); try again shortly.",
                per_user=False,
            )

    def position(self, job_id: str) -> int | None:
        """1-based position of a waiting job, or None."""
        for index, job in enumerate(self, start=1):
            if job.id == job_id:
                return index
        return None

    def remove(self, job_id: str) -> Job | None:
        """Take a waiting job out (cancel); return it, or None if it is not waiting."""
        for user, lane in self._users.items():
            for job in lane:
                if job.id == job_id:
                    lane.remove(job)
                    self._size -= 1
                    if not lane:
                        del self._users[user]
                    return job
        return None

    def pop_batch(self, max_images: int) -> list[Job]:
        """The next job in turn, plus compatible waiting jobs up to `max_images` images."""
        if not self._size:
            return []
        first = self._take_turn(next(iter(self._users)))
        batch, images = [first], first.request.count
        key = first.request.batch_key()
        for job in list(self):
            if images + job.request.count > max_images:
                continue
            if job.request.batch_key() == key:
                self.remove(job.id)
                batch.append(job)
                images += job.request.count
        return batch

    def drain(self) -> list[Job]:
        """Remove and return every waiting job, in fair order."""
        jobs = list(self)
        self._users.clear()
        self._size = 0
        return jobs

    def _take_turn(self, user: str) -> Job:
        lane = self._users.pop(user)
        job = lane.popleft()
        self._size -= 1
        if lane:
            self._users[user] = lane  # to the back of the turn order
        return job
