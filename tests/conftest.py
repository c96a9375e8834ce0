"""Shared test fixtures: the tiny model loaded once, runners, workers and fault hooks.

Loading a model costs seconds (mostly imports), so each model is loaded once per
session by `ModelCache` and handed to every `BatchRunner` through its `loader`
hook. Runners, workers and fault hooks are built per test: they hold per-test
state (the stop flag, the step timer, the hooks), and only one worker thread
drives a loaded model at a time.

Nothing here imports torch at module level, so storage and bot tests that use
none of these fixtures do not pay for it.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pytest
from PIL import Image

from generation.jobs import Job
from generation.request import GenerationRequest

if TYPE_CHECKING:
    import torch

    from generation.loader import LoadedModel, Placement
    from generation.models import ModelRegistry, ModelSpec
    from generation.runner import BatchRunner
    from generation.worker import GenerationWorker

GATE_TIMEOUT = 20.0  # seconds a held GPU thread waits before giving up: a broken test fails


def make_request(**changes: Any) -> GenerationRequest:
    """A small, fast text-to-image request on the tiny model; keywords override fields."""
    base = GenerationRequest(
        prompt="a red fox in the snow",
        negative_prompt="blurry",
        width=64,
        height=64,
        steps=2,
        guidance=7.0,
        seed=42,
        count=1,
        model="tiny",
        scheduler="euler",
    )
    return base.with_changes(**changes)


def make_job(job_id: str, user: str, **changes: Any) -> Job:
    """A job of `make_request(**changes)` submitted by `user`."""
    return Job(job_id, user, make_request(**changes))


def pixels(png: bytes) -> np.ndarray:
    """Decoded RGB pixels of an image file, as int16 so differences do not wrap."""
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def assert_same_image(a: bytes, b: bytes) -> None:
    """Two image files show the same image, up to 8-bit rounding.

    Batched and single pipeline calls differ in the last float bits (other kernel paths
    for other batch sizes, about 2e-6 here), which now and then flips a value by one level
    when it is rounded to 8 bits: about 1 value in 10,000 on the tiny model.
    """
    diff = np.abs(pixels(a) - pixels(b))
    assert diff.max() <= 1, f"pixels differ by up to {diff.max()} levels"
    assert (diff > 0).mean() <= 0.001, f"{(diff > 0).mean():.2%} of the values differ"


def image_png(width: int, height: int) -> bytes:
    """A smooth colour gradient as PNG bytes: an input image for image-to-image jobs."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


class ModelCache:
    """A `BatchRunner` loader that loads each (model, placement) once per session."""

    def __init__(self) -> None:
        self._models: dict[tuple[ModelSpec, Placement], LoadedModel] = {}

    def __call__(self, spec: ModelSpec, placement: Placement) -> LoadedModel:
        from generation.loader import load_model

        key = (spec, placement)
        if key not in self._models:
            self._models[key] = load_model(spec, placement)
        return self._models[key]


class Gate:
    """Holds the GPU thread inside a hook until the test opens it.

    `entered` is set on the event loop when the GPU thread arrives, so tests await
    it rather than sleep. `opener` is the threading.Event that opens the gate (its
    own by default; the runner's stop flag for shutdown tests).
    """

    def __init__(self, opener: threading.Event | None = None) -> None:
        self.entered = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._open = opener if opener is not None else threading.Event()

    def hold(self) -> None:
        """Called in the GPU thread: tell the loop we are here, then wait to be let through."""
        self._loop.call_soon_threadsafe(self.entered.set)
        if not self._open.wait(GATE_TIMEOUT):
            raise TimeoutError("the test never opened the gate")

    def release(self) -> None:
        self._open.set()


class Faults:
    """A `FaultInjector` whose hooks each test sets; records the batches the GPU thread ran."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.on_batch: Callable[[list[Job]], None] | None = None
        self.on_step: Callable[[int, torch.Tensor, list[Job]], None] | None = None
        self._gates: list[Gate] = []

    def before_batch(self, jobs: list[Job]) -> None:
        self.batches.append([job.id for job in jobs])
        if self.on_batch is not None:
            self.on_batch(jobs)

    def on_latents(self, step: int, latents: torch.Tensor, jobs: list[Job]) -> None:
        if self.on_step is not None:
            self.on_step(step, latents, jobs)

    def gate(self, opener: threading.Event | None = None) -> Gate:
        """A new gate, opened at teardown at the latest. Call it on the event loop."""
        gate = Gate(opener)
        self._gates.append(gate)
        return gate

    def release_all(self) -> None:
        for gate in self._gates:
            gate.release()


class RunnerFactory(Protocol):
    def __call__(
        self,
        *,
        registry: ModelRegistry | None = None,
        progress_interval: float = 0.0,
        previews: bool = True,
        loader: Callable[[ModelSpec, Placement], LoadedModel] | None = None,
    ) -> BatchRunner: ...


class WorkerFactory(Protocol):
    async def __call__(
        self,
        runner: BatchRunner | None = None,
        *,
        preload: str = "tiny",
        max_batch: int = 8,
        queue_size: int = 100,
        max_per_user: int = 10,
    ) -> GenerationWorker: ...


@pytest.fixture(scope="session")
def model_cache() -> ModelCache:
    return ModelCache()


@pytest.fixture(scope="session")
def cpu() -> Placement:
    from generation.loader import Placement

    return Placement.resolve("cpu")


@pytest.fixture(scope="session")
def tiny_registry() -> ModelRegistry:
    from generation.models import ModelRegistry, parse_model_entry

    return ModelRegistry([parse_model_entry("tiny")])


@pytest.fixture
def faults() -> Iterator[Faults]:
    injector = Faults()
    yield injector
    injector.release_all()


@pytest.fixture
def make_runner(
    model_cache: ModelCache, tiny_registry: ModelRegistry, cpu: Placement, faults: Faults
) -> RunnerFactory:
    """Builds a fresh `BatchRunner` on the CPU with this test's `faults` and the shared models."""
    from generation.runner import BatchRunner

    def make(
        *,
        registry: ModelRegistry | None = None,
        progress_interval: float = 0.0,
        previews: bool = True,
        loader: Callable[[ModelSpec, Placement], LoadedModel] | None = None,
    ) -> BatchRunner:
        return BatchRunner(
            registry if registry is not None else tiny_registry,
            cpu,
            progress_interval=progress_interval,
            previews=previews,
            loader=loader if loader is not None else model_cache,
            faults=faults,
        )

    return make


@pytest.fixture
async def start_worker(make_runner: RunnerFactory, faults: Faults) -> AsyncIterator[WorkerFactory]:
    """Starts `GenerationWorker`s (model preloaded); opens every gate and stops them at teardown."""
    from generation.worker import GenerationWorker

    workers: list[GenerationWorker] = []

    async def start(
        runner: BatchRunner | None = None,
        *,
        preload: str = "tiny",
        max_batch: int = 8,
        queue_size: int = 100,
        max_per_user: int = 10,
    ) -> GenerationWorker:
        worker = GenerationWorker(
            runner if runner is not None else make_runner(),
            max_batch=max_batch,
            queue_size=queue_size,
            max_per_user=max_per_user,
        )
        await worker.start(preload=preload)
        workers.append(worker)
        return worker

    yield start
    faults.release_all()
    for worker in workers:
        await worker.stop(grace=GATE_TIMEOUT)


@pytest.fixture
def pipeline_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts pipeline calls: one entry per call, the number of images it made."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    calls: list[int] = []
    for cls in (StableDiffusionPipeline, StableDiffusionImg2ImgPipeline):
        original = cls.__call__

        def counted(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            calls.append(len(kwargs["prompt"]))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", counted)
    return calls
