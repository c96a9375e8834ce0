"""Building the generation side from settings: the model registry and the worker.

Shared by `sdbot run` and `sdbot imagine`, so the offline demo runs the very
worker the bot uses.
"""

from __future__ import annotations

from bot.settings import Settings
from generation.models import ModelRegistry
from generation.worker import GenerationWorker


def make_registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry.from_entries(settings.model_entries)


def make_worker(settings: Settings, registry: ModelRegistry) -> GenerationWorker:
    from generation.loader import Placement
    from generation.runner import BatchRunner

    placement = Placement.resolve(
        settings.device,
        settings.dtype,
        low_vram=settings.low_vram,
        compile=settings.compile,
        channels_last=settings.channels_last,
        compile_aspects=settings.compile_aspect_ratios,
        max_pixels=settings.max_pixels,
        compile_cache=settings.compile_cache,
        # A batch holds up to max_batch images, or one job's count when that is more.
        max_images=max(settings.max_batch, settings.max_count),
    )
    runner = BatchRunner(registry, placement, progress_interval=settings.progress_interval)
    return GenerationWorker(
        runner,
        max_batch=settings.max_batch,
        queue_size=settings.queue_size,
        max_per_user=settings.max_queued_per_user,
    )
