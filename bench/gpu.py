"""GPU benchmark: a naive diffusers bot against sdbot's worker, on random-weight models.

On the GPU box (H100 / H200), from the repository root:

    python bench/gpu.py --device cuda --budget 420 --out $OUT/gpu.md

About 5-7 minutes: experiments that no longer fit the budget are skipped (each has a
rough cost; torch.compile, the costly part, runs last), so give the command a limit a
minute above --budget. The table so far is printed, and written to --out, after every
experiment; the full table comes last. It needs torch with CUDA, diffusers,
transformers, numpy and Pillow (accelerate for the low-VRAM row only), and imports
nothing of sdbot but `generation`. No download: SD 1.5 (512 px) and SDXL (1024 px)
are built with random weights from their configs (`bench/gpu_models.py`).
`--only sd15` / `--quick` shorten it; `--requests` sets the burst (default 24 jobs).

CPU smoke run of the same harness (CI runs it with `--requests 2 --quick`):

    python bench/gpu.py --device cpu --model tiny --requests 2

Rows (in the sdbot ladder each row adds one switch to the one above):
- baseline: the plain diffusers pipeline as a naive bot runs it: fp16, default settings
  (diffusers' default attention is already SDPA), one request at a time, one image
  each, saved as PNG. "classic attention" swaps `AttnProcessor` (no SDPA) into UNet
  and VAE. On the CPU, fp16 is replaced by fp32.
- VAE decode only: the VAE decoder alone, one image at the native size, per dtype
  (SDXL's pipeline upcasts an fp16 VAE to fp32, as the baseline row does).
- sdbot: the real `GenerationWorker` + `BatchRunner` (fair queue, cross-user batching,
  previews every 0.5 s, PNG output) fed a burst of jobs from 8 users, 1-4 images each,
  two aspect ratios; the loader builds the random-weight pipeline with the row's
  switches. "max_batch" is the most images per pipeline call; rows after the sweep
  use the best one measured. The turbo rows are the guidance-free path (no CFG, 1 and
  4 steps) on the SD 1.5 architecture. low-VRAM: model CPU offload + VAE tiling, one
  image, for its peak memory. torch.compile rows compile with dynamic shapes and warm
  every (bucket, one image / several) shape before the clock starts.

Columns:
- images/s: finished images / wall time (sdbot: the whole burst, first submit to last
  result; PNG encoding included in both).
- ms/UNet step (batch): one UNet forward timed alone (CUDA events, median of 5) at the
  row's batch: b = images x 2 with CFG (sdbot: a full max_batch).
- peak GiB: torch.cuda.max_memory_allocated over the measured run, weights included.
- first preview s: one job on an empty queue, model warm, from submit (baseline: from
  the call) to its first latent preview.
- warm-up s: the first calls after the model is placed (CUDA and cuDNN start-up;
  compilation in compiled rows). The notes give the random-weight build time apart.
- TFLOP/s: DESIGN.md's FLOP counts of the finished images (UNet per step, doubled by
  CFG, plus one VAE decode, scaled by pixel area) / wall time; % of floor: that over
  790 TFLOP/s, DESIGN.md's dense bf16 figure (--peak-tflops to change).
- speed vs baseline: images/s over the model's baseline fp16 row.
- notes: batches formed, the share of the GPU thread's time spent outside the
  pipeline call (PNG encoding, grids: the GPU idles then), the UNet's own TFLOP/s,
  graphs compiled during warm-up and during the burst (should be 0), failures.
"""

# ruff: noqa: E402  (the repository root must be on sys.path before sdbot's imports)

from __future__ import annotations

import time

STARTED = time.monotonic()

import argparse
import asyncio
import gc
import io
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch

from bench.gpu_models import (
    PEAK_TFLOPS,
    PROFILES,
    Profile,
    build_pipeline,
    build_safety_checker,
    build_vae,
    image_tflop,
    profile_for,
)
from generation.compiled import CompilePlan, compiled_graphs, use_cache_dir
from generation.errors import JobFailed
from generation.jobs import Job
from generation.loader import LoadedModel, Placement, _place, compile_model
from generation.models import FAMILIES, ModelRegistry, ModelSpec
from generation.phases import BatchPhases
from generation.preview import preview_images
from generation.request import GenerationRequest
from generation.runner import BatchRunner, DecodedOutcome
from generation.worker import GenerationWorker, JobHandle

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PROMPT = "a lighthouse on a cliff at dusk, oil painting, dramatic light"
NEGATIVE = "blurry, low quality, watermark"
USERS = 8
COUNTS = (1, 2, 4, 3)  # images per request, cycled: 2.5 on average
BEST = 0  # Setup.max_batch: the best max_batch measured so far for the model
GIB = 1024**3


# -- what each row runs -------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """How one row's pipeline is placed and switched."""

    dtype: str = "bf16"
    sdpa: bool = True
    channels_last: bool = False
    max_batch: int = 1  # BEST: the best measured so far
    fused_qkv: bool = False
    compile_unet: bool = False
    compile_vae: bool = False
    low_vram: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    cache: str = "compiled"  # compiled rows: the inductor cache folder's name in this run
    safety: bool = False  # SD 1.5's safety checker (random weights) beside the pipeline


@dataclass(frozen=True)
class Experiment:
    """One measurement: `kind` is "baseline", "vae" or "sdbot"."""

    profile: Profile
    kind: str
    setup: Setup
    requests: int  # baseline: images in a row; sdbot: jobs in the burst
    steps: int
    guidance: float
    scheduler: str = "euler"
    estimate_s: float = 10.0  # rough seconds on an H100, for --budget
    tag: str = ""
    sweep: bool = False  # its max_batch competes for BEST


@dataclass
class Row:
    """One line of the table; None prints as a dash."""

    model: str
    mode: str
    images_per_s: float | None = None
    unet_ms: float | None = None
    unet_batch: int | None = None
    peak_gib: float | None = None
    first_preview_s: float | None = None
    warmup_s: float | None = None
    tflops: float | None = None
    notes: str = ""
    is_baseline: bool = False
    comparable: bool = True  # False: a part of the pipeline alone, no "speed vs baseline"


def build_plan(
    models: Sequence[str], cuda: bool, requests: int, quick: bool, compile_only: bool = False
) -> list[Experiment]:
    """Every model's cheap rows first, then torch.compile (the costly part) last."""
    plan: list[Experiment] = []
    if not compile_only:
        for key in models:
            plan += _model_plan(profile_for(key, cuda), cuda, requests, quick)
    if not quick or compile_only:
        for key in models:
            if key != "sdxl":
                plan += _compile_plan(profile_for(key, cuda), requests)
    return plan


def _experiment(
    p: Profile, kind: str, setup: Setup, requests: int, estimate_s: float, **extra: Any
) -> Experiment:
    """An experiment at the profile's steps and guidance unless `extra` says otherwise."""
    fields: dict[str, Any] = {"steps": p.steps, "guidance": p.guidance, **extra}
    return Experiment(p, kind, setup, requests, estimate_s=estimate_s, **fields)


def _model_plan(p: Profile, cuda: bool, requests: int, quick: bool) -> list[Experiment]:
    xl = p.key == "sdxl"
    images = (2 if xl else 4) if cuda else max(1, min(2, requests))
    baseline = _experiment(p, "baseline", Setup(dtype="fp16"), images, 25 if xl else 12)
    if xl:  # SDXL costs ~8x SD 1.5 per image: its baseline and sdbot's best, no ladder
        best_xl = Setup(fused_qkv=True, max_batch=8, vae_slicing=True)
        burst = max(2, requests // 4) if cuda else requests
        sdbot = _experiment(p, "sdbot", best_xl, burst, 45)
        return [baseline, sdbot] if quick else [baseline, _vae(p), sdbot]
    best = Setup(fused_qkv=True, max_batch=BEST)  # sdbot's CUDA defaults
    # A hub SD 1.5 ships a safety checker, which sdbot runs on the device after each batch.
    checked = _experiment(p, "sdbot", replace(best, safety=True), requests, 16)
    if quick:
        return [baseline, _experiment(p, "sdbot", best, requests, 14), checked]
    small = max(2, requests // 4)
    classic = _experiment(p, "baseline", Setup(dtype="fp16", sdpa=False), max(1, images // 2), 8)
    ladder = [
        _experiment(p, "sdbot", Setup(dtype="fp16"), small, 8),
        _experiment(p, "sdbot", Setup(), small, 8),
        _experiment(p, "sdbot", Setup(channels_last=True), small, 8),
        *(
            _experiment(
                p, "sdbot", Setup(channels_last=True, max_batch=mb), requests, 14, sweep=True
            )
            for mb in (4, 8, 16)
        ),
        _experiment(p, "sdbot", best, requests, 14, sweep=True),
        checked,
    ]
    turbo = [
        _experiment(
            p,
            "sdbot",
            best,
            requests,
            6,
            steps=steps,
            guidance=0.0,
            scheduler="euler-a",
            tag=f"turbo path: no CFG, {steps} step{'s' if steps > 1 else ''}",
        )
        for steps in (1, 4)
    ]
    low = Setup(low_vram=cuda, vae_tiling=True)
    tag = "model CPU offload + VAE tiling" if cuda else "VAE tiling (no offload on CPU)"
    low_vram = _experiment(p, "sdbot", low, 1, 8, tag=tag)
    return [baseline, classic, _vae(p), *ladder, *turbo, low_vram]


def _vae(p: Profile) -> Experiment:
    return _experiment(p, "vae", Setup(), 3, 6)


def _compile_plan(p: Profile, requests: int) -> list[Experiment]:
    """sdbot's SDBOT_COMPILE path: the UNet and VAE compiled for the burst's two buckets
    while the model loads, from an empty cache; a restart (a new process) compiling from
    that cache; then the UNet alone, into another empty cache (this process's in-memory
    caches stay warm, so its compile time flatters it)."""
    both = Setup(fused_qkv=True, max_batch=BEST, compile_unet=True, compile_vae=True)
    unet_only = replace(both, compile_vae=False, cache="unet-only")
    return [
        _experiment(p, "sdbot", both, requests, 240, sweep=True, tag="empty compile cache"),
        _experiment(p, "restart", both, requests, 90, tag="restart, compile cache warm"),
        _experiment(p, "sdbot", unet_only, requests, 150, sweep=True, tag="empty compile cache"),
    ]


# -- the device ---------------------------------------------------------------------


class Device:
    """The card (or CPU) under test: dtypes, syncs, timing and peak memory."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cuda = name.startswith("cuda")

    def dtype(self, name: str) -> torch.dtype:
        """fp16 kernels are very slow on CPUs, so CPU runs use fp32 where fp16 is asked."""
        return DTYPES["fp32" if name == "fp16" and not self.cuda else name]

    def describe(self) -> str:
        if not self.cuda:
            return f"CPU, torch {torch.__version__}"
        props = torch.cuda.get_device_properties(self.name)
        return (
            f"{props.name}, {props.total_memory / GIB:.0f} GiB, torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}"
        )

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.sync()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        if not self.cuda:
            return None
        self.sync()
        return torch.cuda.max_memory_allocated() / GIB

    def release(self) -> None:
        """Free what the last experiment left: compiled graphs, cached blocks."""
        torch._dynamo.reset()
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def time_ms(self, fn: Callable[[], object], reps: int = 5) -> float:
        """Median milliseconds of `fn`, after one untimed call."""
        fn()
        self.sync()
        samples = []
        for _ in range(reps):
            if self.cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
            else:
                began = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - began) * 1000)
        return statistics.median(samples)


@torch.inference_mode()
def unet_step_ms(pipe: Any, device: Device, batch: int, width: int, height: int) -> float:
    """One UNet forward at `batch`, called as the pipelines call it, with inputs made
    in inference mode as theirs are (a compiled UNet recompiles for ordinary tensors)."""
    unet = pipe.unet
    config = getattr(unet, "_orig_mod", unet).config
    dtype = getattr(unet, "_orig_mod", unet).dtype
    on = {"device": device.name, "dtype": dtype}
    sample = torch.randn(batch, config.in_channels, height // 8, width // 8, **on)
    context = torch.randn(batch, 77, config.cross_attention_dim, **on)
    timestep = torch.tensor(999.0, device=device.name)
    added = None
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        added = {
            "text_embeds": torch.randn(batch, pooled, **on),
            "time_ids": torch.randn(batch, 6, **on),
        }

    def forward() -> object:
        return unet(
            sample,
            timestep,
            encoder_hidden_states=context,
            timestep_cond=None,
            cross_attention_kwargs=None,
            added_cond_kwargs=added,
            return_dict=False,
        )

    return device.time_ms(forward)


def classic_attention(pipe: Any) -> None:
    """The pre-SDPA attention (explicit softmax(QK^T)V) in the UNet and the VAE."""
    from diffusers.models.attention_processor import AttnProcessor

    pipe.unet.set_attn_processor(AttnProcessor())
    pipe.vae.set_attn_processor(AttnProcessor())


def unet_note(row: Row, p: Profile, width: int, height: int) -> str:
    """The UNet-alone rate, to compare with the row's whole-pipeline rate."""
    if row.unet_ms is None or row.unet_batch is None or p.unet_tflop is None:
        return ""
    tflop = p.unet_tflop * row.unet_batch * width * height / p.flop_side**2
    return f"UNet alone {tflop / row.unet_ms * 1000:.0f} TFLOP/s"


# -- baseline: the plain pipeline, one request at a time -------------------------------


def run_baseline(exp: Experiment, device: Device, deadline: float | None) -> list[Row]:
    p, setup = exp.profile, exp.setup
    dtype = device.dtype(setup.dtype)
    attention = "SDPA (diffusers default)" if setup.sdpa else "classic attention"
    row = Row(
        p.label,
        f"baseline: diffusers {_dtype_name(dtype)}, {attention}, 1 at a time",
        is_baseline=setup.sdpa,
    )
    began = time.perf_counter()
    pipe = build_pipeline(p.key, device.name, dtype)
    built = time.perf_counter() - began
    if not setup.sdpa:
        classic_attention(pipe)
    width, height = p.buckets[0]
    call = {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "width": width,
        "height": height,
        "num_inference_steps": exp.steps,
        "guidance_scale": exp.guidance,
    }

    def one_image() -> None:
        image = pipe(**call).images[0]
        image.save(io.BytesIO(), format="PNG")

    row.warmup_s = _seconds(one_image)
    device.reset_peak()
    began, done = time.perf_counter(), 0
    while done < exp.requests and (done == 0 or _left(deadline) > 0):
        one_image()
        done += 1
    elapsed = time.perf_counter() - began
    row.peak_gib = device.peak_gib()
    row.images_per_s = done / elapsed
    tflop = image_tflop(p, width, height, exp.steps, exp.guidance)
    row.tflops = None if tflop is None else done * tflop / elapsed
    row.first_preview_s = _baseline_first_preview(pipe, call, p)
    row.unet_batch = 2 if exp.guidance > 1 else 1
    row.unet_ms = unet_step_ms(pipe, device, row.unet_batch, width, height)
    row.notes = "; ".join(
        filter(None, [f"{done} images", unet_note(row, p, width, height), f"build {built:.1f} s"])
    )
    return [row]


def _baseline_first_preview(pipe: Any, call: dict[str, Any], p: Profile) -> float:
    """Seconds from the call to the first step's latent preview; the rest is skipped."""
    started = time.perf_counter()
    seen: list[float] = []

    def on_step(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if not seen:
            preview_images(tensors["latents"], FAMILIES[p.family])
            seen.append(time.perf_counter() - started)
            pipe._interrupt = True
        return tensors

    pipe(
        **call,
        output_type="latent",
        callback_on_step_end=on_step,
        callback_on_step_end_tensor_inputs=["latents"],
    )
    return seen[0]


def run_vae(exp: Experiment, device: Device, deadline: float | None) -> list[Row]:
    """The VAE decoder alone, one image at the native size, in each dtype."""
    p = exp.profile
    width, height = p.buckets[0]
    names = ("fp32", "fp16", "bf16") if device.cuda else ("fp32", "bf16")
    vae = build_vae(p.key, device.name, torch.float32)
    rows = []
    for name in names:
        vae.to(dtype=DTYPES[name])
        latents = torch.randn(1, 4, height // 8, width // 8, device=device.name, dtype=DTYPES[name])
        device.reset_peak()
        with torch.inference_mode():
            ms = device.time_ms(partial(vae.decode, latents, return_dict=False), exp.requests)
        tflop = None if p.vae_tflop is None else p.vae_tflop * width * height / p.flop_side**2
        rows.append(
            Row(
                p.label,
                f"VAE decode only, {name}, 1 image",
                images_per_s=1000 / ms,
                peak_gib=device.peak_gib(),
                comparable=False,
                tflops=None if tflop is None else tflop / ms * 1000,
                notes=f"{ms:.1f} ms per decode",
            )
        )
    return rows


# -- sdbot: the real worker on a mixed burst ----------------------------------------------


@dataclass
class BatchTiming:
    images: int
    seconds: float  # all of the GPU thread's turn: pipeline, conversion, checks
    phases: BatchPhases | None  # the pipeline call by phase, on the device's clock


class TimedRunner(BatchRunner):
    """sdbot's BatchRunner, recording how each batch's time splits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[BatchTiming] = []
        self._depth = 0

    def run_decoded(
        self,
        jobs: list[Job],
        publish: Callable[[str, Any], None],
        is_cancelled: Callable[[str], bool],
    ) -> dict[str, DecodedOutcome]:
        if self._depth:  # the runner retrying a failed batch job by job: counted above
            return super().run_decoded(jobs, publish, is_cancelled)
        began = time.perf_counter()
        self.phases = None
        self._depth += 1
        try:
            outcomes = super().run_decoded(jobs, publish, is_cancelled)
        finally:
            self._depth -= 1
        images = sum(job.request.count for job in jobs)
        self.batches.append(BatchTiming(images, time.perf_counter() - began, self.phases))
        return outcomes


@dataclass
class RandomWeightLoader:
    """The runner's loader: a random-weight pipeline placed by sdbot's own `_place`
    (device or CPU offload, VAE tiling, channels_last) and compiled by sdbot's own
    `compile_model` (the row's buckets, warmed at the row's largest batch), plus the
    switches sdbot's Placement does not have (fused QKV off, VAE slicing)."""

    profile: Profile
    setup: Setup
    compiling: Compiling
    seconds: float = 0.0
    compile_s: float | None = None

    def __call__(self, spec: ModelSpec, placement: Placement) -> LoadedModel:
        began = time.perf_counter()
        pipe = build_pipeline(self.profile.key, placement.device, placement.dtype)
        if not self.setup.sdpa:
            classic_attention(pipe)
        if self.setup.fused_qkv:
            pipe.fuse_qkv_projections()
        _place(pipe, placement)
        if self.setup.vae_slicing:
            pipe.vae.enable_slicing()
        checker = extractor = None
        if self.setup.safety:
            checker, extractor = build_safety_checker(
                self.profile.key, placement.device, placement.dtype
            )
        self.seconds = time.perf_counter() - began
        if self.setup.compile_unet:
            use_compile_cache(self.setup.cache)
            plan = compile_plan(self.profile, self.setup, self.compiling)
            self.compile_s = compile_model(pipe, plan)
        return LoadedModel(spec, placement, pipe, pipe, checker, extractor)


@dataclass(frozen=True)
class Compiling:
    """torch.compile's mode and backend for the compiled rows ("eager": dynamo without
    code generation, for a quick CPU check of the path)."""

    mode: str = "default"
    backend: str = "inductor"


def compile_plan(p: Profile, setup: Setup, compiling: Compiling) -> CompilePlan:
    return CompilePlan(
        tuple(p.buckets),
        mode=None if compiling.mode == "default" else compiling.mode,
        backend=compiling.backend,
        vae=setup.compile_vae,
        max_images=max(setup.max_batch, max(COUNTS)),
    )


_CACHE_ROOT: list[Path] = []


def use_compile_cache(name: str, root: Path | None = None) -> Path:
    """Point inductor and Triton at this run's cache folder `name` (created empty in a
    temporary folder of the run, so the first compiled row compiles from cold)."""
    if root is None:
        if not _CACHE_ROOT:
            _CACHE_ROOT.append(Path(tempfile.mkdtemp(prefix="sdbot-bench-compile-")))
        root = _CACHE_ROOT[0]
    folder = root / name
    for variable in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        os.environ.pop(variable, None)  # sdbot's own setter keeps values already there
    use_cache_dir(folder)
    return folder


def run_restart(
    exp: Experiment, device: Device, deadline: float | None, compiling: Compiling
) -> list[Row]:
    """A restart: a new process builds the model and compiles it from the cache the row
    before it filled, as sdbot does when it starts again. Only its compile time counts."""
    p, setup = exp.profile, exp.setup
    folder = use_compile_cache(setup.cache)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--restart-probe",
        f"{p.key}:{setup.max_batch}:{int(setup.compile_vae)}",
        "--compile-mode",
        compiling.mode,
        "--compile-backend",
        compiling.backend,
        "--device",
        device.name,
        "--compile-cache",
        str(folder),
    ]
    timeout = None if deadline is None else max(60.0, _left(deadline))
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    found = [line for line in done.stdout.splitlines() if line.startswith("compile_s=")]
    if done.returncode != 0 or not found:
        raise RuntimeError(f"restart probe failed: {done.stderr.strip()[-300:]}")
    seconds = float(found[-1].removeprefix("compile_s="))
    return [
        Row(
            p.label,
            describe(exp, device),
            warmup_s=seconds,
            comparable=False,
            notes=f"a new process compiling from the cache of the row above: {seconds:.0f} s",
        )
    ]


def restart_probe(spec: str, device: Device, compiling: Compiling) -> int:
    """The child of `run_restart`: build, place, compile; print the compile seconds."""
    key, max_batch, vae = spec.split(":")
    p = profile_for(key, device.cuda)
    setup = Setup(
        fused_qkv=True, max_batch=int(max_batch), compile_unet=True, compile_vae=vae == "1"
    )
    pipe = build_pipeline(p.key, device.name, device.dtype(setup.dtype))
    pipe.fuse_qkv_projections()
    pipe.to(device.name)
    seconds = compile_model(pipe, compile_plan(p, setup, compiling))
    if seconds is None:
        print("compiling failed (see the warning above)", file=sys.stderr)
        return 1
    print(f"compile_s={seconds:.2f}", flush=True)
    return 0


def _request(exp: Experiment, index: int, bucket: int, count: int) -> GenerationRequest:
    width, height = exp.profile.buckets[bucket % len(exp.profile.buckets)]
    return GenerationRequest(
        prompt=f"{PROMPT}, variation {index}",
        negative_prompt=NEGATIVE,
        width=width,
        height=height,
        steps=exp.steps,
        guidance=exp.guidance,
        seed=1000 + index,
        count=count,
        model=exp.profile.key,
        scheduler=exp.scheduler,
    )


def mixed_burst(exp: Experiment) -> list[Job]:
    """`exp.requests` jobs from up to 8 users, 1-4 images each; a third of them in the
    second aspect ratio."""
    jobs = []
    for i in range(exp.requests):
        count = COUNTS[(i + i // USERS) % len(COUNTS)]
        jobs.append(Job(f"burst-{i}", f"user-{i % USERS}", _request(exp, i, i % 3 // 2, count)))
    return jobs


def _did_work(outcome: BaseException | None) -> bool:
    """Whether a finished job's images were computed: a result, or random weights'
    NaN pixels (half-precision overflow), which cost the same GPU time."""
    return outcome is None or (isinstance(outcome, JobFailed) and "NaN" in str(outcome))


async def _settle(handles: list[JobHandle], seconds: float | None = None) -> list[JobHandle]:
    """Wait up to `seconds` for the handles' results; the handles that finished."""
    if handles:
        await asyncio.wait([h.result for h in handles], timeout=seconds)
    return [h for h in handles if h.result.done()]


async def _warm_up(worker: GenerationWorker, exp: Experiment) -> float:
    """The first jobs after loading (CUDA and cuDNN start-up), one at a time over both
    buckets, with one image and with two. A compiled row compiled its buckets while
    loading, as sdbot does, so no graph should be compiled here."""
    shapes = ((0, 2), (1, 1), (1, 2), (0, 1))
    began = time.perf_counter()
    for index, (bucket, count) in enumerate(shapes):
        job = Job(f"warm-{index}", "warm", _request(exp, 900 + index, bucket, count))
        for handle in await _settle([worker.submit(job)]):
            outcome = handle.result.exception()
            if not _did_work(outcome):
                raise RuntimeError(f"warm-up job failed: {outcome}")
    return time.perf_counter() - began


async def _first_preview(worker: GenerationWorker, exp: Experiment) -> float | None:
    """Seconds from submit to the first preview of one job on the empty queue; the job
    is then cancelled."""
    job = Job("probe", "probe", _request(exp, 999, 0, 1))
    began = time.perf_counter()
    handle = worker.submit(job)
    seen = None
    async for progress in handle.updates():  # ends when the job does
        if progress.previews and seen is None:
            seen = time.perf_counter() - began
            worker.cancel(job.id)
    return seen


@dataclass
class Burst:
    finished: list[JobHandle]  # the handles whose jobs ended
    seconds: float
    peak_gib: float | None
    graphs: int  # compiled during the burst (a compiled row should show 0)


async def _burst(
    worker: GenerationWorker,
    runner: TimedRunner,
    jobs: list[Job],
    device: Device,
    deadline: float | None,
) -> Burst:
    """Submit every job at once, as a busy server sees them, and wait for them all (or
    for the budget)."""
    runner.batches.clear()
    device.reset_peak()
    graphs = compiled_graphs()
    began = time.perf_counter()
    handles = [worker.submit(job) for job in jobs]
    finished = await _settle(handles, None if deadline is None else max(5.0, _left(deadline)))
    seconds = time.perf_counter() - began
    return Burst(finished, seconds, device.peak_gib(), compiled_graphs() - graphs)


class PhaseClock:
    """Prints how long each phase of an experiment took, as progress in the log."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        print(f"   {phase}: {now - self.last:.1f} s", flush=True)
        self.last = now


def _sdbot_worker(
    exp: Experiment, device: Device, compiling: Compiling
) -> tuple[GenerationWorker, TimedRunner, RandomWeightLoader]:
    p, setup = exp.profile, exp.setup
    spec = ModelSpec(p.key, "random-weights", FAMILIES[p.family])
    placement = Placement(
        device=device.name,
        dtype=device.dtype(setup.dtype),
        low_vram=setup.low_vram,
        channels_last=setup.channels_last,
        vae_tiling=setup.vae_tiling,
    )
    loader = RandomWeightLoader(p, setup, compiling)
    runner = TimedRunner(ModelRegistry([spec]), placement, progress_interval=0.5, loader=loader)
    worker = GenerationWorker(
        runner, max_batch=setup.max_batch, queue_size=exp.requests + 8, max_per_user=exp.requests
    )
    return worker, runner, loader


async def _sdbot(
    exp: Experiment, device: Device, deadline: float | None, compiling: Compiling
) -> Row:
    p, setup = exp.profile, exp.setup
    worker, runner, loader = _sdbot_worker(exp, device, compiling)
    row = Row(p.label, describe(exp, device))
    phase = PhaseClock()
    try:
        await worker.start(preload=p.key)
        phase("build and place")
        graphs = compiled_graphs()
        row.warmup_s = await _warm_up(worker, exp)
        warm_graphs = compiled_graphs() - graphs
        phase("warm-up")
        row.first_preview_s = await _first_preview(worker, exp)
        burst = await _burst(worker, runner, mixed_burst(exp), device, deadline)
        phase("first preview and burst")
    finally:
        await worker.stop(grace=60)
    row.peak_gib = burst.peak_gib
    _burst_figures(row, exp, burst.finished, burst.seconds, exp.requests)
    if setup.compile_unet and loader.compile_s is None:
        row.notes += ", COMPILING FAILED: ran uncompiled (see the log)"
    if loader.compile_s is not None:
        row.warmup_s = (row.warmup_s or 0.0) + loader.compile_s
        row.notes += (
            f", compiling at load {loader.compile_s:.0f} s, graphs compiled after it: "
            f"{warm_graphs} at warm-up, {burst.graphs} during the burst"
        )
    width, height = p.buckets[0]
    if runner.model is not None and not setup.low_vram:
        row.unet_batch = setup.max_batch * (2 if exp.guidance > 1 else 1)
        row.unet_ms = unet_step_ms(runner.model.txt2img, device, row.unet_batch, width, height)
        phase("UNet timing")
    row.notes = "; ".join(
        filter(
            None,
            [
                row.notes,
                _thread_note(runner.batches, burst.seconds),
                unet_note(row, p, width, height),
                f"build {loader.seconds:.1f} s",
            ],
        )
    )
    runner.model = None
    return row


def _burst_figures(
    row: Row, exp: Experiment, finished: list[JobHandle], elapsed: float, submitted: int
) -> None:
    images, tflop, failures = 0, 0.0, []
    for handle in finished:
        outcome = handle.result.exception()
        if not _did_work(outcome):
            failures.append(f"{type(outcome).__name__}: {outcome}")
            continue
        request = handle.job.request
        images += request.count
        per = image_tflop(
            exp.profile, request.width, request.height, request.steps, request.guidance
        )
        tflop += (per or 0.0) * request.count
    row.images_per_s = images / elapsed if images else None
    row.tflops = tflop / elapsed if exp.profile.unet_tflop is not None and images else None
    notes = [f"{submitted} jobs, {images} images"]
    if len(finished) < submitted:
        notes.append(f"stopped at the budget after {len(finished)} jobs")
    if failures:
        notes.append(f"{len(failures)} failed, first: {failures[0][:120]}")
    row.notes = ", ".join(notes)


def _thread_note(batches: list[BatchTiming], burst_s: float) -> str:
    """Batches formed, and where the burst's time went, by phase on the device's clock:
    prompt encoding and set-up, UNet steps, VAE decode, conversion and checks; "between"
    is the rest of the burst (the GPU thread waiting for the next batch, syncs, model
    loads), "GPU thread busy" the GPU thread's turns over the burst."""
    if not batches:
        return ""
    images = sum(b.images for b in batches)
    note = f"{len(batches)} batches of {images / len(batches):.1f} images"
    timed = [b.phases for b in batches if b.phases is not None]
    if not timed or burst_s <= 0:
        return note
    parts = {
        "prepare": sum(t.prepare_s for t in timed),
        "UNet steps": sum(t.denoise_s for t in timed),
        "VAE decode": sum(t.decode_s for t in timed),
        "finish": sum(t.finish_s for t in timed),
    }
    parts["between"] = max(0.0, burst_s - sum(parts.values()))
    shares = ", ".join(f"{name} {seconds / burst_s:.0%}" for name, seconds in parts.items())
    busy = sum(b.seconds for b in batches) / burst_s
    return f"{note}; burst time: {shares}; GPU thread busy {busy:.0%}"


def describe(exp: Experiment, device: Device) -> str:
    s = exp.setup
    parts = [f"sdbot {_dtype_name(device.dtype(s.dtype))}"]
    if not s.sdpa:
        parts.append("classic attention")
    if s.channels_last:
        parts.append("channels_last")
    parts.append(f"max_batch {s.max_batch or 'best'}")
    if s.fused_qkv:
        parts.append("fused QKV")
    if s.compile_unet:
        parts.append("compiled UNet+VAE" if s.compile_vae else "compiled UNet")
    if s.vae_slicing:
        parts.append("VAE slicing")
    if s.safety:
        parts.append("safety checker")
    if exp.tag:
        parts.append(exp.tag)
    return ", ".join(parts)


def run_sdbot(
    exp: Experiment, device: Device, deadline: float | None, compiling: Compiling
) -> list[Row]:
    return [asyncio.run(_sdbot(exp, device, deadline, compiling))]


# -- the table ----------------------------------------------------------------------------

COLUMNS = (
    "model",
    "mode",
    "images/s",
    "ms/UNet step (batch)",
    "peak GiB",
    "first preview s",
    "warm-up s",
    "TFLOP/s",
    "% of floor",
    "speed vs baseline",
    "notes",
)


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(rows: Sequence[Row], peak_tflops: float = PEAK_TFLOPS) -> str:
    """The Markdown table, grouped by model in first-seen order."""
    order = list(dict.fromkeys(row.model for row in rows))
    baselines = {r.model: r.images_per_s for r in rows if r.is_baseline and r.images_per_s}
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in sorted(rows, key=lambda r: order.index(r.model)):
        base = baselines.get(row.model)
        speed = None
        if base is not None and row.images_per_s is not None and row.comparable:
            speed = row.images_per_s / base
        unet = "-" if row.unet_ms is None else f"{row.unet_ms:.1f} (b={row.unet_batch})"
        floor = None if row.tflops is None else row.tflops / peak_tflops * 100
        cells = [
            row.model,
            row.mode,
            _fmt(row.images_per_s, 2),
            unet,
            _fmt(row.peak_gib, 2),
            _fmt(row.first_preview_s, 2),
            _fmt(row.warmup_s, 1),
            _fmt(row.tflops, 1),
            _fmt(floor, 0),
            "-" if speed is None else f"{speed:.2f}x",
            row.notes.replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_verdict(rows: Sequence[Row], peak_tflops: float = PEAK_TFLOPS) -> str | None:
    """Issue 6's target for SD 1.5 at 512 px, 25 steps with guidance, on the best row."""
    sd15 = [r for r in rows if r.model == PROFILES["sd15"].label]
    base = next((r.images_per_s for r in sd15 if r.is_baseline and r.images_per_s), None)
    full = [
        r
        for r in sd15
        if r.mode.startswith("sdbot")
        and "turbo" not in r.mode
        and "offload" not in r.mode
        and r.images_per_s
    ]
    if base is None or not full:
        return None
    best = max(full, key=lambda r: r.images_per_s or 0.0)
    speed = (best.images_per_s or 0.0) / base
    floor = (best.tflops or 0.0) / peak_tflops * 100
    preview = best.first_preview_s
    checks = [
        f"{speed:.2f}x baseline (>= 4x: {'yes' if speed >= 4 else 'NO'})",
        f"{floor:.0f}% of the FLOP floor (>= 40%: {'yes' if floor >= 40 else 'NO'})",
        f"first preview {_fmt(preview, 2)} s "
        f"(< 1 s: {'yes' if preview is not None and preview < 1 else 'NO'})",
    ]
    return f"Target, SD 1.5 512 px 25 steps CFG, best row ({best.mode}): " + "; ".join(checks)


# -- running it ----------------------------------------------------------------------------


def _dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)


def _seconds(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def _left(deadline: float | None) -> float:
    return float("inf") if deadline is None else deadline - time.monotonic()


@dataclass
class Bench:
    """The run: the plan, the rows so far, and where they are reported."""

    device: Device
    plan: list[Experiment]
    deadline: float | None
    compiling: Compiling
    peak_tflops: float
    out: Path | None
    rows: list[Row] = field(default_factory=list)
    best_batch: dict[str, tuple[float, int]] = field(default_factory=dict)

    def run(self) -> None:
        for index, exp in enumerate(self.plan, start=1):
            exp = self._resolve(exp)
            left = _left(self.deadline)
            title = f"[{index}/{len(self.plan)}] {exp.profile.label} {exp.kind}: {self._mode(exp)}"
            if left < exp.estimate_s:
                note = f"skipped: {max(left, 0):.0f} s left, needs ~{exp.estimate_s:.0f} s"
                print(f"\n== {title}: {note}", flush=True)
                self.rows.append(Row(exp.profile.label, self._mode(exp), notes=note))
            else:
                print(f"\n== {title}", flush=True)
                began = time.monotonic()
                new = self._measure(exp)
                print(f"   took {time.monotonic() - began:.1f} s", flush=True)
                self.rows += new
                self._remember_batch(exp, new)
            self.report(final=False)

    def _measure(self, exp: Experiment) -> list[Row]:
        try:
            if exp.kind == "baseline":
                return run_baseline(exp, self.device, self.deadline)
            if exp.kind == "vae":
                return run_vae(exp, self.device, self.deadline)
            if exp.kind == "restart":
                return run_restart(exp, self.device, self.deadline, self.compiling)
            return run_sdbot(exp, self.device, self.deadline, self.compiling)
        except Exception as exc:
            traceback.print_exc()
            first_line = (str(exc).splitlines() or [""])[0][:160]
            message = f"ERROR {type(exc).__name__}: {first_line}"
            return [Row(exp.profile.label, self._mode(exp), notes=message)]
        finally:
            self.device.release()

    def _mode(self, exp: Experiment) -> str:
        if exp.kind in ("sdbot", "restart"):
            return describe(exp, self.device)
        return f"{exp.kind} {exp.setup.dtype}" + ("" if exp.setup.sdpa else ", classic attention")

    def _resolve(self, exp: Experiment) -> Experiment:
        if exp.setup.max_batch != BEST:
            return exp
        _, batch = self.best_batch.get(exp.profile.key, (0.0, 8))
        return replace(exp, setup=replace(exp.setup, max_batch=batch))

    def _remember_batch(self, exp: Experiment, rows: list[Row]) -> None:
        rate = rows[0].images_per_s if rows else None
        if not exp.sweep or rate is None:
            return
        if rate > self.best_batch.get(exp.profile.key, (0.0, 0))[0]:
            self.best_batch[exp.profile.key] = (rate, exp.setup.max_batch)

    def report(self, *, final: bool) -> None:
        table = render(self.rows, self.peak_tflops)
        verdict = target_verdict(self.rows, self.peak_tflops) if self.device.cuda else None
        elapsed = time.monotonic() - STARTED
        head = f"## sdbot GPU benchmark: {self.device.describe()}, {elapsed:.0f} s"
        text = "\n\n".join(filter(None, [head, table, verdict]))
        print(("\n# FINAL\n" if final else "\n") + text, flush=True)
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(text + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--model",
        "--only",
        dest="models",
        default=None,
        help="comma-separated: sd15, sdxl, tiny (default: sd15,sdxl on CUDA, tiny on CPU)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="jobs in a burst (default 24 on CUDA, 4 on CPU; SDXL a quarter)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="only the baseline and sdbot's best configuration"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for the whole run; skips experiments that no longer fit",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    parser.add_argument(
        "--compile-mode",
        default="default",
        help="torch.compile mode (max-autotune costs minutes per shape)",
    )
    parser.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS)
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help='torch.compile backend ("eager" checks the compiled path quickly on a CPU)',
    )
    parser.add_argument("--compile-only", action="store_true", help="only the torch.compile rows")
    parser.add_argument("--restart-probe", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--compile-cache", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet()
    device = Device(args.device)
    if device.cuda and not torch.cuda.is_available():
        print("--device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.restart_probe is not None:
        use_compile_cache(".", args.compile_cache)
        return restart_probe(
            args.restart_probe, device, Compiling(args.compile_mode, args.compile_backend)
        )
    models = (args.models or ("sd15,sdxl" if device.cuda else "tiny")).split(",")
    unknown = [m for m in models if m not in PROFILES]
    if unknown:
        print(f"unknown model(s) {unknown}; choose from {sorted(PROFILES)}", file=sys.stderr)
        return 2
    if not device.cuda:
        torch.set_flush_denormal(True)  # random weights make denormals: 100x slower on CPUs
    requests = args.requests or (24 if device.cuda else 4)
    deadline = None if args.budget is None else STARTED + args.budget
    plan = build_plan(models, device.cuda, requests, args.quick, args.compile_only)
    compiling = Compiling(args.compile_mode, args.compile_backend)
    bench = Bench(device, plan, deadline, compiling, args.peak_tflops, args.out)
    estimate = sum(exp.estimate_s for exp in plan)
    print(
        f"sdbot GPU benchmark on {device.describe()}: {len(plan)} experiments, "
        f"~{estimate:.0f} s on an H100 by estimate, budget {args.budget or 'none'} s",
        flush=True,
    )
    bench.run()
    bench.report(final=True)
    return 0 if any(row.images_per_s for row in bench.rows) else 1


def _quiet() -> None:
    """Keep the output to the tables: library chatter goes, real warnings stay."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*functools.lru_cache.*")  # dynamo, on diffusers
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
