"""Load bench: the real bot (`sdbot run`, a subprocess) against the fake Discord.

    .venv/bin/python bench/load.py [--users 50] [--requests 500] [--seconds 10]

Starts a FakeDiscord in this process with `--users` members, starts `sdbot run` on the
built-in tiny model pointed at it, and sends `--requests` /imagine evenly over `--seconds`,
round-robin across the members. Then it waits for every accepted job to finish and prints:

- acknowledgement latency (dispatch -> the bot's first callback, as the fake measures it)
  p50/p99/max, and how many missed Discord's 3 s deadline;
- how many were accepted, refused by the rate limit or by the queue size (each distinct
  message with its count), or answered otherwise;
- how many accepted jobs completed, and whether each was delivered exactly once (one
  result message per job on the fake, and the database agrees);
- the bot process's event-loop lag p99 during the load (a 50 ms sleep probe) and its peak
  memory (max RSS).

The probe is the only thing added to the bot: the child process runs this file with
`--child`, which wraps `bot.__main__.serve` with the probe and then runs `sdbot run`'s own
`main(["run"])`. Exit code 0 when every check passes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
HERE = SCRIPT.parent
ROOT = HERE.parent
# `python bench/load.py` puts bench/ first on sys.path, where bench/storage.py would
# shadow the storage package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROBE_INTERVAL = 0.05
DEADLINE = 3.0
RESULT = re.compile(r'"sdbot:reroll:(\d+):0"')


# -- the child: sdbot run with an event-loop lag probe ------------------------------------


def child(probe_path: str) -> int:
    """Run `sdbot run` with a loop-lag probe; write the samples and max RSS at exit."""
    import bot.__main__ as entry
    from bot.cli import main

    samples: list[tuple[float, float]] = []
    serve = entry.serve

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(PROBE_INTERVAL)
            samples.append((time.time(), loop.time() - started - PROBE_INTERVAL))

    async def serve_with_probe(settings: Any) -> int:
        task = asyncio.create_task(probe(), name="lag-probe")
        try:
            return await serve(settings)
        finally:
            task.cancel()
            write_probe(probe_path, samples)

    entry.serve = serve_with_probe  # type: ignore[assignment]
    return main(["run"])


def write_probe(path: str, samples: list[tuple[float, float]]) -> None:
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(path).write_text(json.dumps({"lag": samples, "max_rss_kib": rss_kib}))


def read_probe(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"lag": [], "max_rss_kib": 0}


# -- the driver ---------------------------------------------------------------------------


@dataclass
class Outcome:
    sent: int = 0
    send_seconds: float = 0.0
    ack: list[float] = field(default_factory=list)
    unanswered: int = 0
    deferred: int = 0
    accepted: list[int] = field(default_factory=list)
    refusals: dict[str, Counter[str]] = field(default_factory=dict)
    completed: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    drain_seconds: float = 0.0
    not_once: dict[int, int] = field(default_factory=dict)
    db: dict[str, int] = field(default_factory=dict)
    lag: list[float] = field(default_factory=list)
    max_rss_kib: int = 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def classify(text: str) -> str:
    if "rate limit" in text:
        return "rate limit"
    if "jobs waiting" in text or "queue is full" in text:
        return "queue size"
    return "other"


def shape(text: str) -> str:
    """A refusal with its numbers and timestamps blanked, so equal messages group."""
    return re.sub(r"<t:\d+:R>", "<t:…:R>", re.sub(r"\d+", "N", text))


async def drive(args: argparse.Namespace, workdir: Path) -> Outcome:
    from tests.reliability.conftest import new_token
    from tests.reliability.support import BotProcess, bot_env
    from tests.support.fake_discord import FakeDiscord

    outcome = Outcome()
    async with FakeDiscord(token=new_token()) as fake:
        users = [fake.add_user(f"member{i:03d}") for i in range(args.users)]
        data_dir = workdir / "data"
        probe_path = workdir / "probe.json"
        env = bot_env(
            fake,
            data_dir,
            SDBOT_QUEUE_SIZE=str(args.queue_size),
            SDBOT_MAX_QUEUED_PER_USER=str(args.per_user),
            SDBOT_IMAGES_PER_HOUR=str(args.images_per_hour),
            SDBOT_MAX_BATCH=str(args.max_batch),
            SDBOT_PROGRESS_INTERVAL=str(args.progress_interval),
        )
        argv = [sys.executable, str(SCRIPT), "--child", str(probe_path)]
        env["PYTHONPATH"] = str(ROOT)
        process = BotProcess(env, workdir / "bot.log", cwd=workdir, argv=argv)
        await process.start()
        try:
            await process.wait_ready(timeout=300)
            print(f"bot ready (log: {process.log_path})", file=sys.stderr)
            window_start = time.time()
            records = await send(fake, users, args, outcome)
            await collect_answers(fake, records, outcome)
            await drain(data_dir, outcome, args.drain)
            counts = result_counts(fake)
            outcome.not_once = {j: counts[j] for j in outcome.accepted if counts[j] != 1}
            window_end = time.time()
            outcome.db = database_check(data_dir / "sdbot.sqlite3", outcome.accepted)
        finally:
            if process.proc is not None and process.proc.returncode is None:
                process.send(signal.SIGTERM)
                await process.wait_exit(timeout=60)
            await process.ensure_stopped()
        probe = read_probe(probe_path)
        outcome.lag = [lag for at, lag in probe["lag"] if window_start <= at <= window_end]
        outcome.max_rss_kib = probe["max_rss_kib"]
    return outcome


async def send(fake: Any, users: list[Any], args: argparse.Namespace, outcome: Outcome) -> list:
    size, interval = args.size, args.seconds / args.requests
    prompt = f"--size {size}x{size} --steps {args.steps} --n {args.count}"
    loop = asyncio.get_running_loop()
    started = loop.time()
    records = []
    for i in range(args.requests):
        delay = started + i * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        user = users[i % len(users)]
        options = {"prompt": f"load test {i}: a lighthouse at dusk {prompt}"}
        records.append(await fake.slash(user, "general", "imagine", options))
    outcome.sent = len(records)
    outcome.send_seconds = loop.time() - started
    return records


async def collect_answers(fake: Any, records: list, outcome: Outcome) -> None:
    """Acknowledgement times (the first callback request the fake saw) and what each said."""
    from tests.reliability.support import job_id

    with contextlib.suppress(TimeoutError):
        await fake.wait_until(
            lambda: all(r.response_type is not None or r.errors for r in records), 30, "answers"
        )
    first_callback: dict[str, float] = {}
    for request in fake.requests:
        if request.method == "POST" and request.path.startswith("/interactions/"):
            first_callback.setdefault(request.path.split("/")[2], request.at)
    for record in records:
        at = first_callback.get(str(record.id))
        if at is None:
            outcome.unanswered += 1
            continue
        outcome.ack.append(at - record.dispatched_at)
        if record.deferred:
            outcome.deferred += 1
            with contextlib.suppress(TimeoutError):
                await record.wait_message(lambda m: not m.loading, timeout=30)
        message = record.followups[-1] if record.followups else record.message
        if message is None:
            outcome.unanswered += 1
        elif message.ephemeral:
            kind = classify(message.content)
            outcome.refusals.setdefault(kind, Counter())[shape(message.content)] += 1
        else:
            outcome.accepted.append(job_id(record))


async def drain(data_dir: Path, outcome: Outcome, limit: float) -> None:
    """Wait until the database has every accepted job delivered or failed (or `limit` s).

    Only the database is polled here: scanning the fake's messages on every poll would
    load this process, which also serves the fake Discord the bot is talking to.
    """
    db = data_dir / "sdbot.sqlite3"
    started = time.monotonic()
    pending = set(outcome.accepted)
    while pending and time.monotonic() - started < limit:
        rows = read_jobs(db)
        for job in list(pending):
            row = rows.get(job)
            if row is not None and row["delivered_at"] is not None:
                pending.discard(job)
                outcome.completed += 1
            elif row is not None and row["state"] in ("failed", "cancelled"):
                pending.discard(job)
                outcome.failed[job] = f"{row['state']}: {row['error']}"
        await asyncio.sleep(0.5)
    outcome.drain_seconds = time.monotonic() - started


def result_counts(fake: Any) -> Counter[int]:
    """Job id -> how many messages ever carried its result buttons (one pass)."""
    counts: Counter[int] = Counter()
    for message in list(fake.state.messages.values()):
        seen: set[int] = set()
        for version in message.versions:
            seen.update(int(j) for j in RESULT.findall(json.dumps(version.components)))
        counts.update(seen)
    return counts


def read_jobs(db: Path) -> dict[int, sqlite3.Row]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        return {r["id"]: r for r in conn.execute("SELECT * FROM jobs")}


def database_check(db: Path, accepted: list[int]) -> dict[str, int]:
    rows = read_jobs(db)
    return {
        "rows": len(rows),
        "rows_not_accepted": len(set(rows) - set(accepted)),
        "done_and_delivered": sum(
            1 for j in accepted if rows[j]["state"] == "done" and rows[j]["delivered_at"]
        ),
        "queued_or_running": sum(1 for r in rows.values() if r["state"] in ("queued", "running")),
    }


# -- the report ---------------------------------------------------------------------------


def report(args: argparse.Namespace, outcome: Outcome, command: str) -> bool:
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    late = sum(1 for a in outcome.ack if a > DEADLINE)
    refused = {k: sum(c.values()) for k, c in outcome.refusals.items()}
    accepted = len(outcome.accepted)
    checks = {
        "every acknowledgement under 3 s": late == 0 and outcome.unanswered == 0,
        "every accepted job delivered exactly once": (
            not outcome.not_once
            and outcome.completed + len(outcome.failed) == accepted
            and outcome.db.get("done_and_delivered") == outcome.completed
        ),
        "no job rows for refused requests": outcome.db.get("rows_not_accepted") == 0,
        "nothing left queued or running": outcome.db.get("queued_or_running") == 0,
    }
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"sdbot load bench, {now}",
        f"command: {command}",
        f"host: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        (
            f"bot: `sdbot run` subprocess, model tiny on CPU, {args.size}x{args.size}, "
            f"{args.steps} steps, {args.count} image(s) per job; queue {args.queue_size}, "
            f"{args.per_user} queued per member, {args.images_per_hour} images/hour, "
            f"batch {args.max_batch}, progress every {args.progress_interval:g} s"
        ),
        (
            f"sent: {outcome.sent} /imagine from {args.users} members in "
            f"{outcome.send_seconds:.1f} s ({outcome.sent / max(outcome.send_seconds, 1e-9):.0f}/s)"
        ),
        (
            f"acknowledgement latency: p50 {ms(percentile(outcome.ack, 50))}, "
            f"p99 {ms(percentile(outcome.ack, 99))}, max {ms(max(outcome.ack, default=0))}; "
            f"over 3 s: {late}; unanswered: {outcome.unanswered}; deferred: {outcome.deferred}"
        ),
        f"accepted: {accepted}",
    ]
    for kind in ("rate limit", "queue size", "other"):
        counter = outcome.refusals.get(kind, Counter())
        lines.append(f"refused by {kind}: {refused.get(kind, 0)}")
        lines += [f"    {n} x {text!r}" for text, n in counter.most_common()]
    lines += [
        (
            f"completed: {outcome.completed} of {accepted} accepted "
            f"(failed: {len(outcome.failed)}), all finished {outcome.drain_seconds:.1f} s "
            "after the last answer"
        ),
        (
            f"delivered exactly once: {accepted - len(outcome.not_once)} of {accepted}; "
            f"database: {outcome.db.get('done_and_delivered')} done and delivered, "
            f"{outcome.db.get('rows_not_accepted')} rows for refused requests, "
            f"{outcome.db.get('queued_or_running')} left queued/running"
        ),
        (
            f"event-loop lag (bot process, {PROBE_INTERVAL * 1000:.0f} ms sleep probe, "
            f"{len(outcome.lag)} samples during the load): p50 {ms(percentile(outcome.lag, 50))}, "
            f"p99 {ms(percentile(outcome.lag, 99))}, max {ms(max(outcome.lag, default=0))}"
        ),
        f"peak memory (bot process, max RSS): {outcome.max_rss_kib / 1024:.0f} MiB",
    ]
    lines += [f"check: {name}: {'ok' if ok else 'FAILED'}" for name, ok in checks.items()]
    for job, why in list(outcome.failed.items())[:5]:
        lines.append(f"    failed job {job}: {why}")
    for job, n in list(outcome.not_once.items())[:5]:
        lines.append(f"    job {job}: {n} result messages")
    passed = all(checks.values())
    lines.append(f"result: {'PASS' if passed else 'FAIL'}")
    if outcome.ack:
        lines.append(f"(mean acknowledgement {ms(statistics.fmean(outcome.ack))})")
    print("\n".join(lines))
    return passed


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50, help="members sending (50)")
    parser.add_argument("--requests", type=int, default=500, help="/imagine to send (500)")
    parser.add_argument("--seconds", type=float, default=10.0, help="spread over (10 s)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (64)")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps (2)")
    parser.add_argument("--count", type=int, default=4, help="images per job (4)")
    parser.add_argument("--queue-size", type=int, default=100, help="SDBOT_QUEUE_SIZE (100)")
    parser.add_argument("--per-user", type=int, default=3, help="SDBOT_MAX_QUEUED_PER_USER (3)")
    parser.add_argument(
        "--images-per-hour", type=int, default=40, help="SDBOT_IMAGES_PER_HOUR (40)"
    )
    parser.add_argument("--max-batch", type=int, default=8, help="SDBOT_MAX_BATCH (8)")
    parser.add_argument(
        "--progress-interval", type=float, default=1.5, help="SDBOT_PROGRESS_INTERVAL (1.5)"
    )
    parser.add_argument("--drain", type=float, default=600, help="max wait for results (600 s)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and bot log")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        return child(argv[1])
    args = parse(argv)
    command = shlex.join([".venv/bin/python", "bench/load.py", *argv])
    workdir = Path(tempfile.mkdtemp(prefix="sdbot-load-"))
    try:
        outcome = asyncio.run(drive(args, workdir))
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}", file=sys.stderr)
    return 0 if report(args, outcome, command) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
