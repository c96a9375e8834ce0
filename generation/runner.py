"""Runs one batch of jobs through the pipeline, in the worker's GPU thread.

Everything here is blocking and owns the pipeline: only the single worker
thread may call it. Results and progress go back through plain callbacks that
the worker turns into thread-safe hand-offs to the event loop.
"""

from __future__ import annotations

import dataclasses
import gc
import io
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from generation.compiled import release_compiled
from generation.errors import JobCancelled, JobFailed, ModelLoadError, UnsafeWeights, WorkerStopped
from generation.jobs import GeneratedImage, Job, JobResult, Phase, Progress
from generation.loader import LoadedModel, Placement, load_model
from generation.models import ModelRegistry, ModelSpec
from generation.output import encode_png, parameters_text
from generation.phases import BatchPhases, Marks
from generation.preview import preview_images
from generation.request import GenerationRequest, Kind

log = logging.getLogger(__name__)

ProgressSink = Callable[[Progress], None]
Outcome = JobResult | BaseException


@dataclass(frozen=True)
class Decoded:
    """A job's pixels straight off the GPU, before PNG encoding (which is CPU work)."""

    job: Job
    pixels: tuple[np.ndarray, ...]
    nsfw: tuple[bool | None, ...]
    model: str
    elapsed: float
    batch_size: int


DecodedOutcome = Decoded | BaseException


def encode_result(decoded: Decoded) -> JobResult:
    """PNGs with their `parameters` chunk. Safe in any thread."""
    request = decoded.job.request
    pil = [Image.fromarray(pixels) for pixels in decoded.pixels]
    images = tuple(
        GeneratedImage(
            index=i,
            seed=seed,
            png=encode_png(image, parameters_text(request, seed, decoded.model)),
            width=image.width,
            height=image.height,
            nsfw=decoded.nsfw[i],
        )
        for i, (seed, image) in enumerate(zip(request.seeds(), pil, strict=True))
    )
    return JobResult(decoded.job.id, images, decoded.model, decoded.elapsed, decoded.batch_size)


class FaultInjector(Protocol):
    """Test seam: lets tests inject out-of-memory, exceptions or NaN latents."""

    def before_batch(self, jobs: list[Job]) -> None: ...

    def on_latents(self, step: int, latents: torch.Tensor, jobs: list[Job]) -> None: ...


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class StepTimer:
    """Measured seconds per image per denoising step, for queue ETAs."""

    seconds_per_image_step: float | None = None

    def record(self, seconds: float, images: int, steps: int) -> None:
        if images <= 0 or steps <= 0:
            return
        sample = seconds / (images * steps)
        old = self.seconds_per_image_step
        self.seconds_per_image_step = sample if old is None else 0.7 * old + 0.3 * sample


class BatchRunner:
    """Owns the resident model and turns batches of jobs into results."""

    def __init__(
        self,
        registry: ModelRegistry,
        placement: Placement,
        *,
        progress_interval: float = 1.5,
        previews: bool = True,
        loader: Callable[[ModelSpec, Placement], LoadedModel] = load_model,
        faults: FaultInjector | None = None,
    ) -> None:
        self.registry = registry
        self.placement = placement
        self.progress_interval = progress_interval
        self.previews = previews
        self.loader = loader
        self.faults = faults
        self.timer = StepTimer()
        self.phases: BatchPhases | None = None  # the last finished batch's, for logs and benches
        self.model: LoadedModel | None = None
        self.stop_event = threading.Event()

    def ensure_model(self, name: str) -> LoadedModel:
        """The named model, loading it (and unloading the resident one) if needed."""
        spec = self.registry.get(name)
        if self.model is not None and self.model.spec == spec:
            return self.model
        if self.model is not None:
            log.info("switching model: unloading %s to load %s", self.model.spec.name, spec.name)
            compiled = self.model.compile_s is not None
            self.model = None
            if compiled:
                release_compiled()  # dynamo's caches would keep the old weights alive
            free_memory()
        placement = self.placement
        if placement.compile and spec != self.registry.default:
            # Only the default model is compiled: a member switching to another model
            # must not wait minutes for a compile (and the default's comes from the cache).
            placement = dataclasses.replace(placement, compile=False)
        self.model = self.loader(spec, placement)
        return self.model

    def run(
        self,
        jobs: list[Job],
        publish: Callable[[str, Progress], None],
        is_cancelled: Callable[[str], bool],
    ) -> dict[str, Outcome]:
        """`run_decoded`, then PNG encoding in this same thread."""
        return {
            job_id: encode_result(outcome) if isinstance(outcome, Decoded) else outcome
            for job_id, outcome in self.run_decoded(jobs, publish, is_cancelled).items()
        }

    def run_decoded(
        self,
        jobs: list[Job],
        publish: Callable[[str, Progress], None],
        is_cancelled: Callable[[str], bool],
    ) -> dict[str, DecodedOutcome]:
        """Run `jobs` as one pipeline call; on failure, retry them one at a time.

        Returns pixels, not PNGs: the worker encodes them in another thread so the
        GPU thread can start the next batch at once."""
        try:
            return self._run_batch(jobs, publish, is_cancelled)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            if isinstance(exc, ModelLoadError | UnsafeWeights):
                return {job.id: JobFailed(str(exc)) for job in jobs}
            if is_out_of_memory(exc):
                free_memory()
            if len(jobs) == 1:
                return {jobs[0].id: _as_job_failure(exc, jobs[0].request)}
            log.warning("batch of %d jobs failed (%s); retrying one at a time", len(jobs), exc)
            outcomes: dict[str, DecodedOutcome] = {}
            for job in jobs:
                outcomes.update(self.run_decoded([job], publish, is_cancelled))
            return outcomes

    def _run_batch(
        self,
        jobs: list[Job],
        publish: Callable[[str, Progress], None],
        is_cancelled: Callable[[str], bool],
    ) -> dict[str, DecodedOutcome]:
        first = jobs[0].request
        self.phases = None
        resident = self.model is not None and self.model.spec.name == first.model
        for job in jobs:
            phase = Phase.RUNNING if resident else Phase.LOADING
            publish(job.id, Progress(job.id, phase, total=first.steps))
        model = self.ensure_model(first.model)
        if self.faults is not None:
            self.faults.before_batch(jobs)
        started = time.perf_counter()
        reporter = _StepReporter(self, model, jobs, publish, is_cancelled, started)
        rgb, finite, nsfw = self._call_pipeline(model, jobs, reporter)
        if self.stop_event.is_set() and reporter.interrupted:
            return {job.id: WorkerStopped("sdbot is restarting") for job in jobs}
        elapsed = time.perf_counter() - started
        images = sum(job.request.count for job in jobs)
        self.timer.record(elapsed, images, reporter.total)
        self.phases = reporter.marks.phases(images, reporter.total)
        if self.phases is not None:
            log.debug("batch of %d images: %s", images, self.phases)
        outcomes: dict[str, DecodedOutcome] = {}
        offset = 0
        for job in jobs:
            mine = slice(offset, offset + job.request.count)
            offset += job.request.count
            if is_cancelled(job.id):
                outcomes[job.id] = JobCancelled("cancelled")
                continue
            outcomes[job.id] = self._decoded(
                model, job, rgb[mine], bool(finite[mine].all()), nsfw[mine], elapsed, len(jobs)
            )
        return outcomes

    def _call_pipeline(
        self, model: LoadedModel, jobs: list[Job], reporter: _StepReporter
    ) -> tuple[np.ndarray, np.ndarray, tuple[bool | None, ...]]:
        """(N, H, W, 3) uint8 pixels and, per image, whether every value was finite and
        whether the safety checker flagged it (None: the model has no checker).

        The conversion to 8 bits and the safety check happen on the device: a quarter
        of the bytes cross to the host, and the CPU does no per-pixel work."""
        first = jobs[0].request
        prompts, negatives, generators, inits = [], [], [], []
        for job in jobs:
            request = job.request
            for seed in request.seeds():
                prompts.append(request.prompt)
                negatives.append(request.negative_prompt)
                generators.append(torch.Generator("cpu").manual_seed(seed))
                if request.kind.needs_image:
                    inits.append(_init_image(request))
        kwargs: dict[str, Any] = {
            "prompt": prompts,
            "negative_prompt": negatives,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "generator": generators,
            "output_type": "pt",
            "callback_on_step_end": reporter,
            "callback_on_step_end_tensor_inputs": ["latents"],
        }
        if first.kind.needs_image:
            pipe = model.img2img
            steps = _image_job_steps(first.steps, first.strength)
            kwargs.update(image=inits, strength=first.strength, num_inference_steps=steps)
            reporter.total = int(steps * first.strength)
        else:
            pipe = model.txt2img
            kwargs.update(width=first.width, height=first.height)
            reporter.total = first.steps
        pipe.scheduler = model.scheduler(first.scheduler)
        reporter.pipe = pipe
        marks = reporter.marks
        with torch.inference_mode():
            marks.mark("start")
            images = pipe(**kwargs).images.float()  # (N, 3, H, W) in [0, 1]
            marks.mark("decoded")
            finite = torch.isfinite(images).flatten(1).all(dim=1)
            images = images.nan_to_num(0.0).clamp(0, 1)
            rgb = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
            nsfw = _safety_flags(model, images)
            marks.mark("finished")
            return rgb.cpu().numpy(), finite.cpu().numpy(), nsfw

    def _decoded(
        self,
        model: LoadedModel,
        job: Job,
        rgb: np.ndarray,
        finite: bool,
        nsfw: tuple[bool | None, ...],
        elapsed: float,
        batch: int,
    ) -> DecodedOutcome:
        if not finite:
            return JobFailed(
                "the model produced invalid (NaN) pixels; this is usually a half-precision "
                "overflow. The admin can try SDBOT_DTYPE=bf16 or fp32."
            )
        return Decoded(job, tuple(rgb), nsfw, model.spec.name, elapsed, batch)


class _StepReporter:
    """The pipeline's step callback: cancel and stop checks, and throttled progress.

    It touches the GPU only when a progress update is due (to copy latents for the
    previews), never on the other steps.
    """

    def __init__(
        self,
        runner: BatchRunner,
        model: LoadedModel,
        jobs: list[Job],
        publish: Callable[[str, Progress], None],
        is_cancelled: Callable[[str], bool],
        started: float,
    ) -> None:
        self.runner = runner
        self.model = model
        self.jobs = jobs
        self.publish = publish
        self.is_cancelled = is_cancelled
        self.started = started
        self.last_report = float("-inf")
        self.total = 0
        self.pipe: Any = None
        self.interrupted = False
        self.marks = Marks(model.placement.device)

    def __call__(
        self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        latents = tensors["latents"]
        done = step + 1
        if step == 0:
            self.marks.mark("first_step")
        if done == self.total:
            self.marks.mark("last_step")
        if self.runner.faults is not None:
            self.runner.faults.on_latents(step, latents, self.jobs)
        stopping = self.runner.stop_event.is_set()
        if stopping or all(self.is_cancelled(job.id) for job in self.jobs):
            pipe._interrupt = True
            self.interrupted = True
            return tensors
        now = time.perf_counter()
        if now - self.last_report >= self.runner.progress_interval or done == self.total:
            self.last_report = now
            self._report(done, now - self.started, latents)
        return tensors

    def _report(self, done: int, elapsed: float, latents: torch.Tensor) -> None:
        previews: list[Image.Image] = []
        if self.runner.previews:
            previews = preview_images(latents, self.model.spec.family)
        offset = 0
        for job in self.jobs:
            count = job.request.count
            mine = tuple(previews[offset : offset + count])
            offset += count
            self.publish(
                job.id,
                Progress(
                    job.id,
                    Phase.RUNNING,
                    step=done,
                    total=self.total,
                    elapsed=elapsed,
                    previews=mine,
                ),
            )


def _image_job_steps(steps: int, strength: float) -> int:
    """Steps to schedule for an image job. diffusers runs `int(steps * strength)` of them and
    fails when that is 0 (few steps, low strength), so schedule enough for at least one."""
    scheduled = max(steps, math.ceil(1 / strength))
    while int(scheduled * strength) < 1:
        scheduled += 1
    return scheduled


def _init_image(request: GenerationRequest) -> Image.Image:
    if request.init_image is None:
        raise JobFailed(f"a {request.kind} job needs an input image")
    with Image.open(io.BytesIO(request.init_image)) as source:
        image = source.convert("RGB")
    size = (request.width, request.height)
    if image.size != size:
        resample = Image.Resampling.LANCZOS
        if request.kind is Kind.UPSCALE:
            resample = Image.Resampling.BICUBIC
        image = image.resize(size, resample)
    return image


def _safety_flags(model: LoadedModel, images: torch.Tensor) -> tuple[bool | None, ...]:
    """Per image of (N, 3, H, W) in [0, 1]: flagged by the model's safety checker, or
    None where the model has none."""
    if model.safety is None:
        return (None,) * len(images)
    return model.safety.flags(images)


def _as_job_failure(exc: BaseException, request: GenerationRequest) -> BaseException:
    if isinstance(exc, JobFailed | JobCancelled | WorkerStopped):
        return exc
    if is_out_of_memory(exc):
        return JobFailed(
            f"out of GPU memory at {request.width}x{request.height} with {request.count} "
            "image(s); try fewer images or a smaller size"
        )
    reference = secrets.token_hex(4)
    log.error("job failed in the pipeline (reference %s)", reference, exc_info=exc)
    # Exception texts can hold server paths and internals: the user gets a reference.
    return JobFailed(
        f"the pipeline failed ({type(exc).__name__}); the admin can find it in the log "
        f"under reference {reference}"
    )
