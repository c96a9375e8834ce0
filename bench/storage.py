"""Storage throughput: job inserts, state updates and rate-limit checks per second.

Run from the repository root: `.venv/bin/python bench/storage.py [--jobs N] [--repeat R]`.
Each figure is one coroutine after another (the bot's common case) unless the
row says "concurrent", where many coroutines share the one connection at once.
The database is a fresh file in a temporary directory, opened as the bot opens it.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# This file is named like the package it measures: keep bench/ off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from storage import NewJob, RateLimited, Storage  # noqa: E402

REQUEST = {
    "prompt": "a lighthouse on a cliff at dusk, volumetric light, 35mm",
    "negative_prompt": "blurry, text, watermark",
    "width": 512,
    "height": 512,
    "steps": 25,
    "guidance": 7.0,
    "seed": 1234,
    "count": 4,
    "model": "sd15",
    "scheduler": "euler_a",
    "kind": "txt2img",
    "strength": 1.0,
}


def new_job(user_id: int) -> NewJob:
    return NewJob(
        user_id=user_id,
        guild_id=111,
        channel_id=222,
        request=REQUEST,
        interaction_id=333,
        interaction_token="x" * 150,
        interaction_created_at=time.time(),
    )


async def timed(label: str, count: int, run: Callable[[], Awaitable[None]]) -> tuple[str, float]:
    start = time.perf_counter()
    await run()
    elapsed = time.perf_counter() - start
    return label, count / elapsed


async def bench(data_dir: Path, jobs: int, synchronous: str) -> list[tuple[str, float]]:
    storage = await Storage.open(
        data_dir, images_per_hour=40, images_per_day=200, synchronous=synchronous
    )
    results: list[tuple[str, float]] = []
    ids: list[int] = []
    try:

        async def inserts() -> None:
            for i in range(jobs):
                ids.append((await storage.jobs.create(new_job(i % 100))).id)

        async def updates() -> None:
            for job_id in ids:
                await storage.jobs.mark_running(job_id)
                await storage.jobs.mark_done(job_id, [1, 2, 3, 4])

        async def deliveries() -> None:
            for job_id in ids:
                await storage.jobs.mark_delivered(job_id, result_message_id=job_id)

        async def accepts() -> None:
            for i in range(jobs):
                await storage.accept(new_job(10_000 + i), images=4)

        async def checks() -> None:
            for i in range(jobs):
                await storage.limits.check(i % 100, 111, 4)

        async def reserves() -> None:
            # 100 users, 1 image each: every user stays under 40/hour.
            for i in range(jobs):
                await storage.limits.reserve(20_000 + i % 100, 111, 1)

        async def concurrent_reserves() -> None:
            # One user, 50 at a time: 40 granted, the rest refused, never more.
            calls = [storage.limits.reserve(30_000, 111, 1) for _ in range(jobs)]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            granted = sum(not isinstance(o, BaseException) for o in outcomes)
            assert granted == 40, granted
            assert all(isinstance(o, RateLimited) for o in outcomes if isinstance(o, BaseException))

        async def history() -> None:
            for i in range(jobs):
                await storage.jobs.history(i % 100, page=1, per_page=10)

        results.append(await timed("job inserts (JobStore.create)", jobs, inserts))
        results.append(await timed("state updates (mark_running, mark_done)", 2 * jobs, updates))
        results.append(await timed("mark_delivered", jobs, deliveries))
        results.append(await timed("accept (rate-limit reserve + insert)", jobs, accepts))
        results.append(await timed("rate-limit checks (check, read only)", jobs, checks))
        results.append(await timed("rate-limit reserves (reserve)", jobs, reserves))
        results.append(
            await timed("rate-limit reserves, concurrent, one user", jobs, concurrent_reserves)
        )
        results.append(await timed("history pages (10 per page)", jobs, history))
    finally:
        await storage.close()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000, help="operations per figure")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is shown")
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.machine()}, {args.jobs} operations per figure, "
        f"median of {args.repeat} runs on a fresh database each"
    )
    for synchronous in ("NORMAL", "FULL"):
        runs: list[list[tuple[str, float]]] = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(await bench(Path(tmp), args.jobs, synchronous))
        default = " (default)" if synchronous == "NORMAL" else ""
        print(f"\nPRAGMA synchronous = {synchronous}{default}")
        for i, (label, _) in enumerate(runs[0]):
            rate = statistics.median(run[i][1] for run in runs)
            print(f"  {label:<44} {rate:>9,.0f} /s")


if __name__ == "__main__":
    asyncio.run(main())
