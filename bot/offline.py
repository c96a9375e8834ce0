"""`sdbot imagine` and `sdbot models`: the offline side of the command line."""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import sys
from pathlib import Path

from PIL import Image

from bot.assembly import make_registry, make_worker
from bot.settings import Settings
from generation.errors import GenerationError
from generation.jobs import Job, JobResult, Phase, Progress
from generation.models import FAMILIES, ModelRegistry
from generation.output import encode_png, make_grid
from generation.prompt import truncation_warning
from generation.request import GenerationRequest, Kind, RequestOptions
from generation.validation import build_request


def list_models(settings: Settings) -> int:
    registry = make_registry(settings)
    print("Family presets:")
    for family in FAMILIES.values():
        print(
            f"  {family.name:<11} {family.label:<28} {family.native_size}px, "
            f"{family.steps} steps, guidance {family.guidance:g}, {family.scheduler}"
        )
    print("Configured models (the first is the default):")
    for spec in registry:
        print(f"  {spec.name:<24} {spec.family.name:<11} {spec.source_kind:<5} {spec.source}")
    return 0


def _options(args: argparse.Namespace) -> RequestOptions:
    return RequestOptions(
        negative_prompt=args.negative,
        width=args.width,
        height=args.height,
        aspect=args.aspect,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        count=args.count,
        model=args.model,
        scheduler=args.scheduler,
        strength=args.strength,
    )


def _read_init(path: Path | None) -> tuple[bytes | None, tuple[int, int] | None]:
    if path is None:
        return None, None
    from generation.images import inspect_image

    data = path.read_bytes()
    return data, inspect_image(data)


def make_request(
    args: argparse.Namespace, settings: Settings, registry: ModelRegistry
) -> GenerationRequest:
    init, size = _read_init(args.image)
    return build_request(
        args.prompt,
        _options(args),
        defaults=RequestOptions(),
        registry=registry,
        limits=settings.limits,
        kind=Kind.IMG2IMG if init is not None else Kind.TXT2IMG,
        init_image=init,
        init_size=size,
        rng=random.Random(),
    )


async def imagine(settings: Settings, args: argparse.Namespace) -> int:
    registry = make_registry(settings)
    try:
        request = make_request(args, settings, registry)
    except GenerationError as exc:
        print(f"sdbot: {exc}", file=sys.stderr)
        return 2
    worker = make_worker(settings, registry)
    print(f"loading {request.model}...", file=sys.stderr)
    await worker.start(preload=request.model)
    warning = truncation_warning(worker.tokenizer(request.model), request.prompt)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        handle = worker.submit(Job("cli", "cli", request))
        bar = asyncio.create_task(_show_progress(handle.updates()))
        result = await handle.result
        await bar
    finally:
        await worker.stop()
    _write(result, args.output)
    print(
        f"wrote {args.output} ({request.width}x{request.height}, seeds "
        f"{', '.join(str(i.seed) for i in result.images)}, {result.elapsed:.1f} s)",
        file=sys.stderr,
    )
    return 0


async def _show_progress(updates: object) -> None:
    async for progress in updates:  # type: ignore[attr-defined]
        sys.stderr.write("\r" + _bar(progress).ljust(72))
        sys.stderr.flush()
    sys.stderr.write("\n")


def _bar(progress: Progress, width: int = 30) -> str:
    if progress.phase is Phase.RUNNING and progress.total:
        filled = int(width * progress.step / progress.total)
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] step {progress.step}/{progress.total} "
            f"{progress.elapsed:.1f}s"
        )
    return f"{progress.phase.value}..."


def _write(result: JobResult, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    if len(result.images) == 1:
        output.write_bytes(result.images[0].png)
        return
    grid = make_grid([Image.open(io.BytesIO(image.png)) for image in result.images])
    output.write_bytes(encode_png(grid))
    for image in result.images:
        output.with_name(f"{output.stem}-{image.index + 1}{output.suffix}").write_bytes(image.png)
