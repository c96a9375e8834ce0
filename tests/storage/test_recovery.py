"""Crash recovery against a real process killed with SIGKILL in the middle of a write."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from storage import ImageMissing, JobState, Storage

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    import storage.files
    from storage import NewJob, Storage
    from storage.jobs import insert_job

    def job(n, **extra):
        return NewJob(user_id=n, guild_id=1, channel_id=2, request={"prompt": f"job {n}"}, **extra)

    async def main(data_dir):
        s = await Storage.open(data_dir)
        queued = await s.jobs.create(job(1))
        running = await s.jobs.create(job(2))
        await s.jobs.mark_running(running.id)
        delivered = await s.jobs.create(job(3))
        await s.jobs.mark_running(delivered.id)
        await s.images.save(delivered.id, 0, b"three", seed=3, width=8, height=8)
        await s.jobs.mark_done(delivered.id, [3])
        assert await s.jobs.mark_delivered(delivered.id, result_message_id=33)
        undelivered = await s.jobs.create(job(4))
        await s.jobs.mark_running(undelivered.id)
        await s.images.save(undelivered.id, 0, b"four", seed=4, width=8, height=8)
        await s.jobs.mark_done(undelivered.id, [4])
        await s.jobs.create(job(5))

        def die(*args):
            os.kill(os.getpid(), signal.SIGKILL)

        async with s.db.transaction() as session:
            # A big row (spills uncommitted pages to the WAL) and a change to an old row.
            await insert_job(session, job(6, init_image=os.urandom(8 << 20)), 0.0)
            await session.run("UPDATE jobs SET state = 'cancelled' WHERE id = ?", (queued.id,))
            print("in transaction", flush=True)
            # Die inside an image write too: after the temp file, before the rename.
            storage.files.os.replace = die
            await s.images.save(undelivered.id, 1, b"half" * 1000, seed=5, width=8, height=8)
        print("not reached", flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.slow
async def test_sigkill_mid_transaction_loses_nothing_committed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(data),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode == -signal.SIGKILL, err.decode()
    assert b"in transaction" in out and b"not reached" not in out

    storage = await Storage.open(data)
    try:
        integrity = await storage.db.one("PRAGMA integrity_check")
        assert integrity is not None and integrity[0] == "ok"
        # Nothing of the killed transaction is visible.
        count = await storage.db.one("SELECT COUNT(*) FROM jobs")
        assert count is not None and count[0] == 5
        assert (await storage.jobs.get(1)).state is JobState.QUEUED

        # Queued and running jobs come back, in their original order, all queued.
        again = await storage.jobs.unfinished()
        assert [(j.id, j.request["prompt"]) for j in again] == [
            (1, "job 1"),
            (2, "job 2"),
            (5, "job 5"),
        ]
        assert all(j.state is JobState.QUEUED for j in again)
        # Done but never posted: re-deliver, never re-run.
        assert [j.id for j in await storage.jobs.undelivered()] == [4]
        assert await storage.images.read(4, 0) == b"four"
        # Delivered: neither run nor posted again.
        assert await storage.jobs.mark_delivered(3) is False
        assert (await storage.jobs.get(3)).result_message_id == 33
        # The image whose write was cut off is absent, not half there.
        with pytest.raises(ImageMissing, match="image 2 of job 4"):
            await storage.images.read(4, 1)
        assert not (storage.images.root / "000000" / "4-1.png").exists()
    finally:
        await storage.close()
