"""CPU benchmark of the generation worker on the built-in tiny model: batching off vs on.

Pushes one mixed queue (by default 24 jobs from 6 members, 1-4 images each, two sizes,
4 steps) through the real `GenerationWorker` with max_batch=1 (one job per pipeline
call: batching off) and max_batch=8 (on), and prints images per second for each, with
the event loop's lag (how late `asyncio.sleep(0.01)` wakes) sampled throughout.

    .venv/bin/python bench/worker.py [--jobs 24] [--users 6] [--steps 4] [--rounds 1]

Each configuration first runs the whole queue once unmeasured (so one-off kernel set-up
costs hit neither), then `--rounds` measured times, alternating. The table shows each
configuration's best round (other work on the machine only ever slows a run down) and
the lag over all its rounds. "cpu stall" is the share of the run's wall time in which
some task waited for a CPU (Linux /proc/pressure/cpu): anything well above 0% means
other processes were competing and the numbers are not clean. Before each measured pass
the bench waits (up to --quiet-wait seconds) for that pressure to fall below --quiet-below.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from generation.jobs import Job, JobResult
from generation.loader import LoadedModel, Placement, load_model
from generation.models import ModelRegistry, ModelSpec, parse_model_entry
from generation.request import GenerationRequest
from generation.runner import BatchRunner
from generation.worker import GenerationWorker

SIZES = ((128, 128), (192, 128))
SLEEP = 0.01
PRESSURE = Path("/proc/pressure/cpu")


@dataclass(frozen=True)
class RunStats:
    """One pass of the whole queue through one worker."""

    images: int
    calls: int
    wall: float
    lags: list[float]
    cpu_stall: float | None  # share of wall time some task waited for a CPU; None if unknown

    @property
    def images_per_second(self) -> float:
        return self.images / self.wall

    @property
    def lag_p99(self) -> float:
        return percentile(self.lags, 0.99)

    @property
    def lag_max(self) -> float:
        return max(self.lags)


def cpu_pressure() -> dict[str, float] | None:
    """The "some" line of Linux CPU pressure: avg10 (percent) and total (microseconds)."""
    try:
        some = PRESSURE.read_text().splitlines()[0]
    except OSError:
        return None
    return {key: float(value) for key, value in (f.split("=") for f in some.split()[1:])}


def cpu_stall_microseconds() -> float | None:
    """Total microseconds in which some task waited for a CPU, since boot."""
    pressure = cpu_pressure()
    return None if pressure is None else pressure["total"]


async def wait_until_quiet(threshold: float, limit: float) -> None:
    """Wait up to `limit` seconds for the 10-second CPU pressure to fall below `threshold`.

    Polls a kernel statistic, so there is no event to await: it sleeps between reads.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        pressure = cpu_pressure()
        if pressure is None or pressure["avg10"] / 100 < threshold:
            return
        await asyncio.sleep(1.0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def mixed_jobs(jobs: int, users: int, steps: int) -> list[Job]:
    """A reproducible mix: members take turns submitting, counts cycle 1-4, a third landscape."""
    result = []
    for i in range(jobs):
        user = f"member{i % users}"
        width, height = SIZES[1] if i % 3 == 2 else SIZES[0]
        request = GenerationRequest(
            prompt=f"a watercolour painting of a harbour, study {i}",
            negative_prompt="blurry, text",
            width=width,
            height=height,
            steps=steps,
            guidance=7.0,
            seed=1000 + i,
            count=1 + (i + i // users) % 4,
            model="tiny",
            scheduler="euler",
        )
        result.append(Job(f"job{i}", user, request))
    return result


async def sample_lag(lags: list[float], stop: asyncio.Event) -> None:
    """Append how late each `asyncio.sleep(SLEEP)` wakes, until `stop` is set."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(SLEEP)
        lags.append(time.perf_counter() - started - SLEEP)


async def run_queue(
    registry: ModelRegistry, model: LoadedModel, jobs: list[Job], max_batch: int
) -> RunStats:
    """Submit every job at once to a fresh worker and wait for all results."""

    def resident(spec: ModelSpec, placement: Placement) -> LoadedModel:
        return model

    runner = BatchRunner(registry, model.placement, loader=resident)
    worker = GenerationWorker(
        runner, max_batch=max_batch, queue_size=len(jobs), max_per_user=len(jobs)
    )
    await worker.start(preload="tiny")
    lags: list[float] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_lag(lags, stop))
    stall_before = cpu_stall_microseconds()
    try:
        started = time.perf_counter()
        handles = [worker.submit(job) for job in jobs]
        results: list[JobResult] = [await handle.result for handle in handles]
        wall = time.perf_counter() - started
    finally:
        stop.set()
        await sampler
        await worker.stop()
    stall_after = cpu_stall_microseconds()
    stall = None
    if stall_before is not None and stall_after is not None:
        stall = (stall_after - stall_before) / 1e6 / wall
    images = sum(len(result.images) for result in results)
    calls = round(sum(1 / result.batch_size for result in results))
    return RunStats(images, calls, wall, lags, stall)


def best_stats(runs: list[RunStats]) -> RunStats:
    """The fastest run, with the lag samples of every run."""
    best = max(runs, key=lambda run: run.images_per_second)
    lags = [lag for run in runs for lag in run.lags]
    return RunStats(best.images, best.calls, best.wall, lags, best.cpu_stall)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def print_table(results: dict[int, RunStats]) -> None:
    header = (
        f"{'max_batch':>9}  {'images':>6}  {'calls':>5}  {'img/call':>8}  {'wall s':>6}  "
        f"{'images/s':>8}  {'lag p99 ms':>10}  {'lag max ms':>10}  {'cpu stall':>9}"
    )
    print(header)
    print("-" * len(header))
    for max_batch, stats in results.items():
        print(
            f"{max_batch:>9}  {stats.images:>6}  {stats.calls:>5}  "
            f"{stats.images / stats.calls:>8.2f}  {stats.wall:>6.2f}  "
            f"{stats.images_per_second:>8.2f}  {stats.lag_p99 * 1000:>10.1f}  "
            f"{stats.lag_max * 1000:>10.1f}  {percent(stats.cpu_stall):>9}"
        )
    off, on = results[min(results)], results[max(results)]
    ratio = on.images_per_second / off.images_per_second
    print(f"\nbatching on / off: {ratio:.2f}x images/s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="measured passes per config")
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=0.10,
        help="before each measured pass, wait for 10 s CPU pressure below this share",
    )
    parser.add_argument("--quiet-wait", type=float, default=120.0, help="longest such wait, s")
    args = parser.parse_args()

    print(
        f"sdbot worker bench: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), tiny model on CPU"
    )
    registry = ModelRegistry([parse_model_entry("tiny")])
    model = await asyncio.to_thread(load_model, registry.get("tiny"), Placement.resolve("cpu"))
    jobs = mixed_jobs(args.jobs, args.users, args.steps)
    sizes = sorted({f"{j.request.width}x{j.request.height}" for j in jobs})
    print(
        f"queue: {len(jobs)} jobs from {args.users} members, "
        f"{sum(j.request.count for j in jobs)} images, sizes {', '.join(sizes)}, "
        f"{args.steps} steps, {args.rounds} measured round(s) after one warm-up\n"
    )

    configs = (1, 8)
    runs: dict[int, list[RunStats]] = {max_batch: [] for max_batch in configs}
    for max_batch in configs:
        await run_queue(registry, model, jobs, max_batch)  # warm-up, not measured
    for _ in range(args.rounds):
        for max_batch in configs:
            await wait_until_quiet(args.quiet_below, args.quiet_wait)
            stats = await run_queue(registry, model, jobs, max_batch)
            runs[max_batch].append(stats)
            print(
                f"  max_batch={max_batch}: {stats.images_per_second:.2f} images/s, "
                f"cpu stall {percent(stats.cpu_stall)}"
            )
    print()
    print_table({max_batch: best_stats(r) for max_batch, r in runs.items()})


if __name__ == "__main__":
    asyncio.run(main())
