"""A fair queue: round-robin across users, bounded in total and per user, and
sparing with model switches.

One user's ten jobs cannot starve another's one: users take turns, each turn
taking that user's oldest job. A batch starts with the job next in turn (the
head) and fills up with compatible jobs (same `batch_key`, at most `max_images`
images in all), still in turn order.

Only one model is resident on the GPU, and loading another takes seconds (SDXL:
10-30 s on a real GPU). If members alternate between two models, strict turns
would load a model for almost every batch. So when the head needs a model other
than `resident` and a job for the resident model is waiting, the first such job
in turn order leads the batch instead (its user has had a turn, unless it is the
head's own user: then the head stays next in turn) and the head is passed over.
A job is passed over at most `max_skips` times (default `DEFAULT_MAX_SKIPS`, 3):
then it leads the next batch, whatever the switch costs. So once a job is next
in turn, at most `max_skips` batches start before it (jobs behind it wait no
more than they would behind any job that is next in turn), and two alternating
models get up to `max_skips + 1` batches per load instead of one.
`max_skips=0` is strict turns.
The bound counts batches, not seconds, so the order does not depend on how long
batches take: the queue can tell each job its true position in advance.

`resident` is the model the next batch will find loaded, as far as the queue
knows: the worker sets it from the GPU before each pop, and each pop sets it to
the model of the batch it hands out (that model will be loaded by the time the
next batch is picked). When it is None, the order is strict turns.

Iteration and positions replay `pop_batch` on a copy of the queue, so they give
the order jobs will run in as long as no job arrives or leaves and every load
succeeds (a failed load leaves no model resident: strict turns from there).

Not thread-safe: only the event loop touches it.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Iterator

from generation.errors import QueueFull
from generation.jobs import Job

DEFAULT_MAX_SKIPS = 3  # batches a job may be passed over for the resident model


class FairQueue:
    """Jobs waiting for the worker, in fair order."""

    def __init__(
        self,
        max_size: int,
        max_per_user: int,
        *,
        max_images: int = 8,
        max_skips: int = DEFAULT_MAX_SKIPS,
    ) -> None:
        if max_images < 1:
            raise ValueError(f"max_images must be at least 1, got {max_images}")
        if max_skips < 0:
            raise ValueError(f"max_skips must be 0 or more, got {max_skips}")
        self.max_size = max_size
        self.max_per_user = max_per_user
        self.max_images = max_images
        self.max_skips = max_skips
        # Users in turn order; each holds its jobs oldest first.
        self._users: OrderedDict[str, deque[Job]] = OrderedDict()
        self._size = 0
        self._resident: str | None = None
        self._skips: dict[str, int] = {}  # job id -> batches that passed it over
        # Batch keys, computed once: a replay compares them for every batch.
        self._keys: dict[str, tuple[object, ...]] = {}  # job id -> its batch key
        self._key_counts: Counter[tuple[object, ...]] = Counter()  # waiting jobs per key
        self._order: list[Job] | None = None  # the replayed run order, until a change

    def __len__(self) -> int:
        return self._size

    def __contains__(self, job_id: object) -> bool:
        return any(job.id == job_id for lane in self._users.values() for job in lane)

    def __iter__(self) -> Iterator[Job]:
        """Jobs in the order they will run if nothing else arrives or leaves."""
        if self._order is None:
            replay = self._copy()
            order: list[Job] = []
            while replay._size:
                order += replay.pop_batch()
            self._order = order
        return iter(self._order)

    @property
    def resident(self) -> str | None:
        """The model the next batch will find loaded (a model name), or None."""
        return self._resident

    @resident.setter
    def resident(self, model: str | None) -> None:
        if model != self._resident:
            self._resident = model
            self._order = None

    def push(self, job: Job, *, force: bool = False) -> int:
        """Add `job`; return its 1-based position. Raise `QueueFull` when over a bound,
        unless `force` (jobs recovered after a restart were accepted already)."""
        if not force:
            self.check_room(job.user)
        lane = self._users.get(job.user)
        if lane is None:
            lane = self._users[job.user] = deque()
        lane.append(job)
        key = self._keys[job.id] = job.request.batch_key()
        self._key_counts[key] += 1
        self._size += 1
        self._order = None
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
        for lane in self._users.values():
            for job in lane:
                if job.id == job_id:
                    self._remove(job)
                    return job
        return None

    def pop_batch(self) -> list[Job]:
        """The next batch: its leader (see the module docstring) plus compatible waiting
        jobs, in turn order, up to `max_images` images. Sets `resident` to its model."""
        if not self._size:
            return []
        head_user = next(iter(self._users))
        lead = self._leader()
        key = self._keys[lead.id]
        if lead.user == head_user and lead is not self._users[head_user][0]:
            # The head's own younger job leads: a skip of the head, not its user's turn,
            # so the head stays next in turn (else it would wait behind every member).
            self._remove(lead)
        else:
            self._take_turn(lead)
        batch, images = [lead], lead.request.count
        if self._key_counts[key]:  # else no scan: nothing could join
            for job in self._turn_order():
                if images >= self.max_images:
                    break
                if images + job.request.count <= self.max_images and self._keys[job.id] == key:
                    batch.append(job)
                    images += job.request.count
            for job in batch[1:]:
                self._remove(job)
        self.resident = lead.request.model
        return batch

    def drain(self) -> list[Job]:
        """Remove and return every waiting job, in the order they would have run."""
        jobs = list(self)
        self._users.clear()
        self._size = 0
        self._skips.clear()
        self._keys.clear()
        self._key_counts.clear()
        self._order = None
        return jobs

    def _turn_order(self) -> Iterator[Job]:
        """Strict turns: every user's oldest job, then every user's second, and so on.
        Lazy, for scans that stop early: change nothing while it runs."""
        lanes = list(self._users.values())  # none is empty
        depth = 0
        while lanes:
            for lane in lanes:
                yield lane[depth]
            depth += 1
            lanes = [lane for lane in lanes if len(lane) > depth]

    def _leader(self) -> Job:
        """The job the next batch starts with; counts a skip when it is not the head."""
        head = self._users[next(iter(self._users))][0]
        model = self._resident
        if model is None or head.request.model == model:
            return head
        if self._skips.get(head.id, 0) >= self.max_skips:
            return head
        for job in self._turn_order():
            if job.request.model == model:
                self._skips[head.id] = self._skips.get(head.id, 0) + 1
                return job
        return head

    def _remove(self, job: Job) -> None:
        """Take `job` out; its user keeps their place in the turn order."""
        lane = self._users[job.user]
        lane.remove(job)
        self._forget(job)
        if not lane:
            del self._users[job.user]

    def _take_turn(self, job: Job) -> None:
        """Take `job` out; its user goes to the back of the turn order."""
        lane = self._users.pop(job.user)
        lane.remove(job)
        self._forget(job)
        if lane:
            self._users[job.user] = lane

    def _forget(self, job: Job) -> None:
        self._size -= 1
        self._skips.pop(job.id, None)
        key = self._keys.pop(job.id)
        self._key_counts[key] -= 1
        if not self._key_counts[key]:
            del self._key_counts[key]
        self._order = None

    def _copy(self) -> FairQueue:
        copy = FairQueue(
            self.max_size, self.max_per_user, max_images=self.max_images, max_skips=self.max_skips
        )
        copy._users = OrderedDict((user, deque(lane)) for user, lane in self._users.items())
        copy._size = self._size
        copy._resident = self._resident
        copy._skips = dict(self._skips)
        copy._keys = dict(self._keys)
        copy._key_counts = self._key_counts.copy()
        return copy
