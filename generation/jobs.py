"""The worker's plain types: jobs in, progress and results out."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from PIL import Image

from generation.request import GenerationRequest


@dataclass(frozen=True)
class Job:
    """One request waiting for the GPU. `user` is the fairness key (whose turn it is)."""

    id: str
    user: str
    request: GenerationRequest


class Phase(StrEnum):
    QUEUED = "queued"
    LOADING = "loading"
    RUNNING = "running"
    DONE = "done"


@dataclass(frozen=True)
class Progress:
    """Where a job stands. `previews` are rough images from the latents, when due."""

    job_id: str
    phase: Phase
    position: int | None = None
    eta: float | None = None
    step: int = 0
    total: int = 0
    elapsed: float = 0.0
    previews: tuple[Image.Image, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class GeneratedImage:
    """One output image: PNG bytes with the `parameters` chunk, and its seed."""

    index: int
    seed: int
    png: bytes = field(repr=False)
    width: int
    height: int
    nsfw: bool | None = None


@dataclass(frozen=True)
class JobResult:
    """A finished job: its images and how long it took. (A grid for display is built
    where it is shown: the bot's grid leaves out withheld images.)"""

    job_id: str
    images: tuple[GeneratedImage, ...]
    model: str
    elapsed: float
    batch_size: int
