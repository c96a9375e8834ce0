"""Periodic upkeep: image retention by age and total size, and old rate-limit rows."""

from __future__ import annotations

import asyncio
import logging

from storage import Storage
from storage.errors import StorageError

log = logging.getLogger(__name__)

DAY = 86400.0


async def keep_tidy(
    storage: Storage, *, retention_days: float, max_image_gb: float, every: float = 3600.0
) -> None:
    """Run forever (cancel to stop): expire images and prune quota rows every `every` s."""
    max_age = retention_days * DAY if retention_days > 0 else None
    max_bytes = int(max_image_gb * 1024**3) if max_image_gb > 0 else None
    while True:
        try:
            report = await storage.enforce_retention(max_age=max_age, max_total_bytes=max_bytes)
            pruned = await storage.limits.prune()
            log.info(
                "housekeeping: %d images expired (%d bytes), %d kept (%d bytes); "
                "%d stray temporary files and %d old quota rows removed",
                report.removed,
                report.removed_bytes,
                report.kept,
                report.kept_bytes,
                report.stray_temps,
                pruned,
            )
        except StorageError as exc:
            log.warning("housekeeping failed: %s", exc)
        except Exception:  # an unreadable image folder, say: try again next round
            log.exception("housekeeping failed")
        await asyncio.sleep(every)
