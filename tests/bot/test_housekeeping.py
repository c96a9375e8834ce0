"""Housekeeping expires old images on its schedule and leaves the jobs in history."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.housekeeping import keep_tidy
from storage import NewJob, Storage


async def test_keep_tidy_expires_old_images(tmp_path: Path) -> None:
    now = [1_000_000.0]
    storage = await Storage.open(tmp_path / "data", clock=lambda: now[0])
    try:
        job = await storage.jobs.create(NewJob(user_id=1, guild_id=None, channel_id=2, request={}))
        await storage.images.save(job.id, 0, b"old image", seed=1, width=8, height=8)
        now[0] += 3 * 86400
        task = asyncio.create_task(keep_tidy(storage, retention_days=2, max_image_gb=0, every=60))
        try:
            for _ in range(100):
                if not await storage.images.for_job(job.id):
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
        assert await storage.images.for_job(job.id) == []
        assert (await storage.jobs.get(job.id)).id == job.id
        assert not any((tmp_path / "data" / "images").rglob("*.png"))
    finally:
        await storage.close()
