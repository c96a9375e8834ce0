"""Image files: atomic writes, clear errors for missing files, retention by age and size."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from storage import ImageMissing, InvalidValue, JobNotFound, Storage
from tests.storage.conftest import START, FakeClock, new_job


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def _job_with_images(storage: Storage, sizes: list[int]) -> int:
    job = await storage.jobs.create(new_job())
    for index, size in enumerate(sizes):
        await storage.images.save(
            job.id, index, bytes([index]) * size, seed=index, width=64, height=64
        )
    return job.id


async def test_save_then_read(storage: Storage) -> None:
    job = await storage.jobs.create(new_job())
    record = await storage.images.save(
        job.id, 0, b"png bytes", seed=7, width=512, height=768, nsfw=True
    )
    assert record.path == f"000000/{job.id}-0.png" and record.bytes == 9 and record.nsfw
    assert await storage.images.read(job.id, 0) == b"png bytes"
    path = await storage.images.path(job.id, 0)
    assert path == storage.images.root / record.path and path.is_file()
    assert await storage.images.for_job(job.id) == [record]
    assert await storage.images.get(job.id, 0) == record


async def test_save_again_replaces_atomically_and_leaves_no_temp_files(storage: Storage) -> None:
    job = await storage.jobs.create(new_job())
    await storage.images.save(job.id, 0, b"first", seed=1, width=8, height=8)
    await storage.images.save(job.id, 0, b"second", seed=2, width=8, height=8)
    assert await storage.images.read(job.id, 0) == b"second"
    files = [p.name for p in _files(storage.images.root)]
    assert files == [f"{job.id}-0.png"]


async def test_save_for_unknown_job_writes_nothing(storage: Storage) -> None:
    with pytest.raises(JobNotFound, match="job 404"):
        await storage.images.save(404, 0, b"x", seed=1, width=8, height=8)
    assert not _files(storage.images.root)
    with pytest.raises(InvalidValue, match="image index must be 0 or more; got -1"):
        await storage.images.save(1, -1, b"x", seed=1, width=8, height=8)


async def test_missing_file_is_a_clear_error(storage: Storage) -> None:
    job_id = await _job_with_images(storage, [10])
    (await storage.images.path(job_id, 0)).unlink()
    with pytest.raises(ImageMissing, match=f"image 1 of job {job_id} .* missing from disk") as info:
        await storage.images.read(job_id, 0)
    assert (info.value.job_id, info.value.index) == (job_id, 0)
    with pytest.raises(ImageMissing, match="missing from disk"):
        await storage.images.path(job_id, 0)
    with pytest.raises(ImageMissing, match="the job has no such image"):
        await storage.images.read(job_id, 3)


async def test_retention_by_age(storage: Storage, clock: FakeClock) -> None:
    old = await _job_with_images(storage, [100, 100])
    clock.advance(10 * 86400)
    new = await _job_with_images(storage, [100])
    report = await storage.enforce_retention(max_age=7 * 86400)
    assert (report.removed, report.removed_bytes, report.kept, report.kept_bytes) == (
        2,
        200,
        1,
        100,
    )
    for index in (0, 1):
        with pytest.raises(ImageMissing, match="removed"):
            await storage.images.read(old, index)
    assert await storage.images.read(new, 0) == bytes([0]) * 100
    # The job keeps its row; its image rows stay, marked.
    assert (await storage.jobs.get(old)).id == old
    marked = await storage.images.for_job(old, include_deleted=True)
    assert [r.deleted_at for r in marked] == [START + 10 * 86400] * 2
    assert not (storage.images.root / marked[0].path).exists()
    assert await storage.images.total_bytes() == 100


async def test_retention_by_total_size_removes_oldest_first(
    storage: Storage, clock: FakeClock
) -> None:
    jobs = []
    for _ in range(5):
        jobs.append(await _job_with_images(storage, [1000]))
        clock.advance(60)
    report = await storage.enforce_retention(max_total_bytes=2500)
    assert (report.removed, report.kept_bytes) == (3, 2000)
    assert await storage.images.total_bytes() == 2000
    live = [j for j in jobs if await storage.images.for_job(j)]
    assert live == jobs[3:]
    again = await storage.enforce_retention(max_total_bytes=2500)
    assert again.removed == 0


async def test_retention_tolerates_files_already_gone(storage: Storage) -> None:
    job_id = await _job_with_images(storage, [10, 10])
    (await storage.images.path(job_id, 1)).unlink()
    report = await storage.enforce_retention(max_total_bytes=0)
    assert (report.removed, report.already_missing) == (2, 1)


async def test_delete_job_images(storage: Storage) -> None:
    job_id = await _job_with_images(storage, [5, 5, 5])
    assert await storage.images.delete_job_images(job_id) == 3
    assert await storage.images.for_job(job_id) == []
    assert not _files(storage.images.root)


async def test_retention_removes_temp_files_a_killed_write_left(storage: Storage) -> None:
    folder = storage.images.root / "000000"
    folder.mkdir(parents=True, exist_ok=True)
    stale, fresh = folder / ".1-0.png.abc.tmp", folder / ".2-0.png.def.tmp"
    stale.write_bytes(b"half an image")
    fresh.write_bytes(b"a write in progress")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))

    report = await storage.enforce_retention()

    assert report.stray_temps == 1
    assert not stale.exists() and fresh.exists()
