"""Atomic file writes and removals (blocking: call them through `asyncio.to_thread`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half.

    The bytes go to a temporary file in the same directory, are fsynced, and the
    file is renamed over `path` with `os.replace`; the directory is fsynced too,
    so the rename survives a power cut.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stray_temps(root: Path, older_than: float) -> int:
    """Remove temporary files a killed `write_atomic` left behind (`.NAME.*.tmp`), if
    last touched before `older_than` (epoch seconds); return how many went."""
    removed = 0
    for path in root.rglob(".*.tmp"):
        with suppress(FileNotFoundError):
            if path.stat().st_mtime < older_than:
                path.unlink()
                removed += 1
    return removed


def remove_files(paths: Iterable[Path]) -> int:
    """Remove each file; return how many were already gone."""
    missing = 0
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            missing += 1
    return missing
