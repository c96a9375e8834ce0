"""torch.compile on a few fixed resolution buckets, warmed when the model loads.

A server's images come in a handful of sizes (each aspect ratio snapped to the
model's native area), so the UNet and the VAE decoder are compiled for exactly
those sizes with the batch dimension dynamic, so the batches the queue forms do
not recompile. A dynamic size still carries guards (backend choices such as a
convolution algorithm can split the batch range in two), so each size is warmed
at the smallest and at the largest batch the queue can form, and a graph that is
compiled later, while jobs wait, is logged.

Every other call runs the eager module: other sizes (an upscale, an explicit
`--size`) and batches of one latent (a guidance-free Turbo image alone; dynamo
would specialise a graph for it), so a member never waits minutes for a
compilation in the middle of the queue. `warm_up` compiles every bucket while the
model loads, and inductor's caches live in the data directory, so a restart
reuses the compiled kernels instead of building them again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# dynamo's per-function graph limit is 8 by default: per bucket a graph for small batches
# and one for large ones, plus room for the few graph breaks a pipeline may have.
GRAPHS_PER_BUCKET = 2


@dataclass(frozen=True)
class CompilePlan:
    """What to compile: image sizes (width, height) in pixels, mode and backend."""

    sizes: tuple[tuple[int, int], ...]
    mode: str | None = None  # torch.compile's mode: None is "default"
    backend: str = "inductor"
    cache_dir: Path | None = None
    vae: bool = True
    max_images: int = 8  # the most images one pipeline call can hold (warmed too)

    def latent_sizes(self, scale: int) -> frozenset[tuple[int, int]]:
        """The buckets as latent (height, width) at the VAE's downscale factor."""
        return frozenset((height // scale, width // scale) for width, height in self.sizes)


class BucketedForward:
    """A callable standing in for a module's forward (or a method like `vae.decode`).

    Calls whose latent's spatial size is a bucket, with a batch of two or more, go to
    the compiled function with the batch dimension marked dynamic; every other call
    goes to the eager one.
    """

    def __init__(
        self,
        eager: Callable[..., Any],
        buckets: frozenset[tuple[int, int]],
        *,
        sample_arg: str,
        mode: str | None,
        backend: str,
        timestep_arg: str | None = None,
    ) -> None:
        self.eager = eager
        self.buckets = buckets
        self.sample_arg = sample_arg
        self.timestep_arg = timestep_arg
        self.compiled = torch.compile(eager, mode=mode, backend=backend)
        self.compiled_calls = 0
        self.eager_calls = 0
        self.warming = False  # set by `warm_up`: graphs compiled then are expected

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sample = args[0] if args else kwargs.get(self.sample_arg)
        if not isinstance(sample, torch.Tensor) or not self.takes(sample):
            self.eager_calls += 1
            return self.eager(*args, **kwargs)
        if self.timestep_arg is not None:
            args, kwargs = _float_timestep(args, kwargs, self.timestep_arg, sample.device)
        for tensor in _batch_tensors(args, kwargs):
            torch._dynamo.maybe_mark_dynamic(tensor, 0)
        self.compiled_calls += 1
        graphs = compiled_graphs()
        began = time.perf_counter()
        with _static_sizes(len(self.buckets)):
            result = self.compiled(*args, **kwargs)
        if not self.warming and compiled_graphs() > graphs:
            log.warning(
                "compiled a new graph for a batch of %d at %s after warm-up (%.1f s); "
                "jobs waited for it",
                sample.shape[0],
                "x".join(str(side) for side in sample.shape[-2:]),
                time.perf_counter() - began,
            )
        return result

    def takes(self, sample: torch.Tensor) -> bool:
        """Whether a call with this latent runs compiled."""
        return (
            sample.dim() == 4 and sample.shape[0] >= 2 and tuple(sample.shape[-2:]) in self.buckets
        )


def _float_timestep(
    args: tuple[Any, ...], kwargs: dict[str, Any], name: str, device: torch.device
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The UNet's timestep as a float32 tensor on the sample's device. Samplers hand it
    over as int64 (DDIM, DPM++, UniPC) or float32 (Euler), and dynamo would compile a
    graph for each; the UNet turns it into float for its embedding anyway, and every
    timestep (0 to 999) is exact in float32."""
    if len(args) > 1:
        value = args[1]
        if isinstance(value, torch.Tensor):
            return (args[0], value.to(device, torch.float32), *args[2:]), kwargs
    elif isinstance(kwargs.get(name), torch.Tensor):
        return args, {**kwargs, name: kwargs[name].to(device, torch.float32)}
    return args, kwargs


def _batch_tensors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[torch.Tensor]:
    """Every tensor argument with a batch dimension (SDXL's extra conditioning included);
    scalars such as the timestep are left alone."""
    values: list[Any] = [*args, *kwargs.values()]
    while values:
        value = values.pop()
        if isinstance(value, torch.Tensor):
            if value.dim() >= 2:
                yield value
        elif isinstance(value, dict):
            values.extend(value.values())


@contextlib.contextmanager
def _static_sizes(buckets: int) -> Iterator[None]:
    """While dynamo traces: no automatic dynamic sizes (a new bucket gets its own static
    graph rather than turning height and width symbolic) and room for every bucket."""
    config = torch._dynamo.config
    limit = max(8, GRAPHS_PER_BUCKET * buckets + 4)
    changes: dict[str, Any] = {"automatic_dynamic_shapes": False}
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            changes[name] = max(limit, getattr(config, name))
            break
    with config.patch(changes):
        yield


def use_cache_dir(cache_dir: Path) -> None:
    """Keep inductor's and Triton's caches in `cache_dir`, so compiled kernels survive
    restarts (their defaults live under /tmp). An admin's own setting wins."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(cache_dir / "triton"))


def compile_pipeline(pipe: Any, plan: CompilePlan) -> None:
    """Swap in bucketed compiled forwards for the UNet (and the VAE decoder)."""
    if plan.cache_dir is not None:
        use_cache_dir(plan.cache_dir)
    scale = vae_scale(pipe)
    unet = pipe.unet
    unet.forward = BucketedForward(
        unet.forward,
        plan.latent_sizes(scale),
        sample_arg="sample",
        timestep_arg="timestep",
        mode=plan.mode,
        backend=plan.backend,
    )
    if plan.vae:
        vae = pipe.vae
        vae.decode = BucketedForward(
            vae.decode,
            plan.latent_sizes(scale),
            sample_arg="z",
            mode=plan.mode,
            backend=plan.backend,
        )


def vae_scale(pipe: Any) -> int:
    """Pixels per latent cell (8 for every Stable Diffusion VAE)."""
    scale = getattr(pipe, "vae_scale_factor", None)
    if isinstance(scale, int) and scale > 0:
        return scale
    return 2 ** (len(pipe.vae.config.block_out_channels) - 1)


def compiled_forwards(pipe: Any) -> list[BucketedForward]:
    """The bucketed forwards `compile_pipeline` installed on `pipe` (none if not compiled)."""
    found = [getattr(pipe.unet, "forward", None), getattr(pipe.vae, "decode", None)]
    return [f for f in found if isinstance(f, BucketedForward)]


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process (its own statistics counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def warm_up(pipe: Any, sizes: Iterable[tuple[int, int]], max_images: int = 8) -> float:
    """Compile every bucket now, before members are waiting: per size, with guidance,
    one image (the smallest compiled UNet batch, 2), two (the smallest compiled VAE
    batch) and the largest batch the queue forms (`max_images`), so guards that split
    the batch range anywhere between are met here. Returns the seconds it took."""
    began = time.perf_counter()
    sizes = list(sizes)
    forwards = compiled_forwards(pipe)
    for forward in forwards:
        forward.warming = True
    try:
        for width, height in sizes:
            for count in sorted({1, 2, max(2, max_images)}):
                with torch.inference_mode():
                    pipe(
                        prompt=["warm-up"] * count,
                        width=width,
                        height=height,
                        num_inference_steps=2,
                        guidance_scale=5.0,
                        output_type="pt",
                    )
    finally:
        for forward in forwards:
            forward.warming = False
    seconds = time.perf_counter() - began
    log.info("compiled for %d size(s) %s in %.1f s", len(sizes), sizes, seconds)
    return seconds


def uncompile_pipeline(pipe: Any) -> None:
    """Put the eager forwards back (a compile or its warm-up failed) and drop the graphs."""
    for module, name in ((pipe.unet, "forward"), (pipe.vae, "decode")):
        if isinstance(vars(module).get(name), BucketedForward):
            delattr(module, name)  # the class's own method shows through again
    release_compiled()


def release_compiled() -> None:
    """Drop every compiled graph (when a compiled model is unloaded). Their guards and
    code reference the old modules; the next model compiles its own, from the on-disk
    cache when it was compiled before."""
    torch._dynamo.reset()
