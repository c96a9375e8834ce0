"""The single GPU worker: a fair queue in front, one dedicated thread behind.

The event loop only ever touches the queue and the job handles; the pipeline
runs in one thread that owns it (diffusers pipelines are not thread-safe).
Progress and results come back with `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from generation.errors import JobCancelled, WorkerStopped
from generation.jobs import Job, JobResult, Phase, Progress
from generation.queue import DEFAULT_MAX_SKIPS, FairQueue
from generation.runner import BatchRunner, Decoded, Outcome, encode_result

log = logging.getLogger(__name__)


class JobHandle:
    """A submitted job: its latest progress, a stream of updates, and its result."""

    def __init__(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        self.job = job
        self.result: asyncio.Future[JobResult] = loop.create_future()
        self.latest = Progress(job.id, Phase.QUEUED)
        self._changed = asyncio.Event()

    def publish(self, progress: Progress) -> None:
        if self.result.done():
            return
        self.latest = progress
        self._changed.set()

    def finish(self, outcome: Outcome) -> None:
        if self.result.done():
            return
        if isinstance(outcome, BaseException):
            self.result.set_exception(outcome)
            self.result.exception()  # mark retrieved: a consumer may have gone away
        else:
            self.result.set_result(outcome)
        self._changed.set()

    async def updates(self) -> AsyncIterator[Progress]:
        """The latest progress each time it changes (coalesced); ends when the job ends."""
        while not self.result.done():
            await self._changed.wait()
            self._changed.clear()
            if self.result.done():
                return
            yield self.latest


@dataclass(frozen=True)
class QueueSnapshot:
    """What /queue shows: the running jobs and the waiting ones with positions and ETAs."""

    running: tuple[Job, ...]
    waiting: tuple[tuple[Job, int, float | None], ...]
    seconds_per_image_step: float | None


class GenerationWorker:
    """Accepts jobs, orders them fairly, batches them, and runs them on one thread."""

    def __init__(
        self,
        runner: BatchRunner,
        *,
        max_batch: int = 8,
        queue_size: int = 100,
        max_per_user: int = 3,
        max_skips: int = DEFAULT_MAX_SKIPS,
    ) -> None:
        """`max_skips`: how many batches for the resident model may run ahead of a job
        that is next in turn but needs another model (see `generation.queue`)."""
        self.runner = runner
        self.max_batch = max_batch
        self.queue = FairQueue(queue_size, max_per_user, max_images=max_batch, max_skips=max_skips)
        self._handles: dict[str, JobHandle] = {}
        self._running: list[Job] = []
        self._running_started = 0.0
        self._cancelled: set[str] = set()
        self._wakeup = asyncio.Event()
        self._accepting = False
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._encoder: ThreadPoolExecutor | None = None
        self._encoding: set[asyncio.Future[JobResult]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, preload: str | None = None) -> None:
        """Start the GPU thread; load `preload` (a model name) in it before returning."""
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdbot-gpu")
        self._encoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sdbot-encode")
        if preload is not None:
            await self._loop.run_in_executor(self._executor, self.runner.ensure_model, preload)
        self.queue.resident = self._resident_model()
        self._accepting = True
        self._task = asyncio.create_task(self._dispatch(), name="sdbot-dispatch")

    @property
    def accepting(self) -> bool:
        return self._accepting

    def submit(self, job: Job, *, force: bool = False) -> JobHandle:
        """Queue `job`; raise `QueueFull` or `WorkerStopped` without changing anything.
        `force` skips the queue bounds (for jobs accepted before a restart)."""
        if not self._accepting or self._loop is None:
            raise WorkerStopped("sdbot is not accepting new jobs right now (restarting)")
        if job.id in self._handles:
            raise ValueError(f"job {job.id} is already queued")
        self.queue.push(job, force=force)
        handle = JobHandle(job, self._loop)
        self._handles[job.id] = handle
        self._publish_positions()
        self._wakeup.set()
        return handle

    def check_room(self, user: str) -> None:
        """Raise `QueueFull` or `WorkerStopped` if `user` could not submit a job now."""
        if not self._accepting:
            raise WorkerStopped("sdbot is not accepting new jobs right now (restarting)")
        self.queue.check_room(user)

    def handle(self, job_id: str) -> JobHandle | None:
        return self._handles.get(job_id)

    def cancel(self, job_id: str) -> bool:
        """Cancel a waiting or running job; False if it is neither."""
        handle = self._handles.get(job_id)
        if handle is None:
            return False
        if self.queue.remove(job_id) is not None:
            self._close(job_id, JobCancelled("cancelled"))
            self._publish_positions()
            return True
        if any(job.id == job_id for job in self._running):
            self._cancelled.add(job_id)  # the GPU thread sees it at the next step
            return True
        return False

    def position(self, job_id: str) -> int | None:
        return self.queue.position(job_id)

    def snapshot(self) -> QueueSnapshot:
        return QueueSnapshot(
            tuple(self._running), tuple(self._waiting()), self.runner.timer.seconds_per_image_step
        )

    def tokenizer(self, model: str) -> Any:
        """A tokenizer of `model` for the event loop (never the GPU thread's own) when
        the model is resident, else None."""
        resident = self.runner.model
        if resident is not None and resident.spec.name == model:
            return resident.spare_tokenizer
        return None

    async def stop(self, grace: float = 30.0) -> list[Job]:
        """Stop accepting, interrupt the running batch, return the jobs that did not finish."""
        self._accepting = False
        self.runner.stop_event.set()
        self._wakeup.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=grace)  # never raises, never cancels it
        if self._encoding:
            await asyncio.wait(set(self._encoding), timeout=grace)
        unfinished = [job for job in self._running if job.id in self._handles]
        unfinished += self.queue.drain()
        for job in unfinished:
            self._close(job.id, WorkerStopped("sdbot is restarting"))
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for executor in (self._executor, self._encoder):
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
        return unfinished

    async def _dispatch(self) -> None:
        assert self._loop is not None and self._executor is not None
        while not self.runner.stop_event.is_set():
            # Between batches the GPU thread is idle, so what it holds is exact here.
            self.queue.resident = self._resident_model()
            batch = self.queue.pop_batch()
            if not batch:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._running = batch
            self._running_started = time.monotonic()
            self._publish_positions()
            try:
                outcomes = await self._loop.run_in_executor(
                    self._executor,
                    self.runner.run_decoded,
                    batch,
                    self._publish_threadsafe,
                    self._cancelled.__contains__,
                )
            except Exception as exc:  # the runner reports per job; this is a last resort
                log.exception("the GPU thread failed a whole batch")
                outcomes = {job.id: exc for job in batch}
            interrupted = []
            for job in batch:
                outcome = outcomes.get(job.id, WorkerStopped("the batch did not finish"))
                if isinstance(outcome, WorkerStopped):
                    interrupted.append(job)  # stop() hands these back
                elif isinstance(outcome, Decoded):
                    self._encode(outcome)  # off the GPU thread: the next batch starts now
                else:
                    self._close(job.id, outcome)
            self._running = interrupted

    def _encode(self, decoded: Decoded) -> None:
        assert self._loop is not None and self._encoder is not None
        future = self._loop.run_in_executor(self._encoder, encode_result, decoded)
        self._encoding.add(future)

        def finished(done: asyncio.Future[JobResult]) -> None:
            self._encoding.discard(done)
            if done.cancelled():
                self._close(decoded.job.id, WorkerStopped("sdbot is restarting"))
            else:
                self._close(decoded.job.id, done.exception() or done.result())

        future.add_done_callback(finished)

    def _publish_threadsafe(self, job_id: str, progress: Progress) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._publish_one, job_id, progress)

    def _publish_one(self, job_id: str, progress: Progress) -> None:
        handle = self._handles.get(job_id)
        if handle is not None:
            handle.publish(progress)

    def _publish_positions(self) -> None:
        for job, position, eta in self._waiting():
            handle = self._handles[job.id]
            handle.publish(Progress(job.id, Phase.QUEUED, position=position, eta=eta))

    def _waiting(self) -> list[tuple[Job, int, float | None]]:
        """Waiting jobs in the order they will run, with 1-based positions and the seconds
        until each starts (None until a batch has been timed).

        The order is the queue's replay of its own policy, model preference included.
        The estimate adds up the measured step time of the work ahead; it leaves out
        model loads (the runner does not time them) and assumes nothing else arrives.
        """
        per_step = self.runner.timer.seconds_per_image_step
        if per_step is None:
            return [(job, position, None) for position, job in enumerate(self.queue, start=1)]
        ahead = 0.0
        if self._running:
            work = sum(j.request.count * j.request.steps for j in self._running) * per_step
            ahead = max(0.0, work - (time.monotonic() - self._running_started))
        waiting: list[tuple[Job, int, float | None]] = []
        for position, job in enumerate(self.queue, start=1):
            waiting.append((job, position, ahead))
            ahead += job.request.count * job.request.steps * per_step
        return waiting

    def _resident_model(self) -> str | None:
        """The name of the model on the GPU. The runner belongs to the GPU thread, but one
        attribute read from the loop is safe: exact between batches, a hint during one."""
        model = self.runner.model
        return model.spec.name if model is not None else None

    def _close(self, job_id: str, outcome: Outcome) -> None:
        handle = self._handles.pop(job_id, None)
        self._cancelled.discard(job_id)
        if handle is not None:
            handle.finish(outcome)
