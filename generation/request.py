"""The request types: what a user asked for, before and after validation.

`RequestOptions` holds what a user typed (every field optional); `build_request`
in `generation.validation` merges options, inline flags, per-user defaults and
the model's preset into one validated `GenerationRequest`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SEED_MAX = 2**32 - 1


class Kind(StrEnum):
    """What a job does with the pipeline."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    UPSCALE = "upscale"
    VARIATION = "variation"

    @property
    def needs_image(self) -> bool:
        return self is not Kind.TXT2IMG


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request. Image i of the job uses seed `seed + i` (mod 2**32)."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    count: int
    model: str
    scheduler: str
    kind: Kind = Kind.TXT2IMG
    init_image: bytes | None = field(default=None, repr=False, compare=False)
    strength: float = 1.0

    def seeds(self) -> list[int]:
        return [(self.seed + i) % (SEED_MAX + 1) for i in range(self.count)]

    def batch_key(self) -> tuple[object, ...]:
        """Jobs with equal keys can share one pipeline call."""
        return (
            self.model,
            self.width,
            self.height,
            self.steps,
            self.guidance,
            self.scheduler,
            self.kind,
            self.strength if self.kind.needs_image else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields; the init image is kept apart (it is binary)."""
        data = dataclasses.asdict(self)
        data.pop("init_image")
        data["kind"] = self.kind.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], init_image: bytes | None = None) -> GenerationRequest:
        fields = {f.name for f in dataclasses.fields(cls)} - {"init_image"}
        values = {k: v for k, v in data.items() if k in fields}
        values["kind"] = Kind(values.get("kind", Kind.TXT2IMG))
        return cls(**values, init_image=init_image)

    def with_changes(self, **changes: Any) -> GenerationRequest:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class RequestOptions:
    """What a user typed or saved as a default: None means "not given"."""

    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    aspect: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    count: int | None = None
    model: str | None = None
    scheduler: str | None = None
    strength: float | None = None

    def merged_over(self, base: RequestOptions) -> RequestOptions:
        """These options, with unset fields taken from `base`."""
        values = {
            f.name: getattr(self, f.name)
            if getattr(self, f.name) is not None
            else getattr(base, f.name)
            for f in dataclasses.fields(self)
        }
        return RequestOptions(**values)


@dataclass(frozen=True)
class Limits:
    """Admin-configured limits, checked before anything is queued."""

    max_steps: int = 60
    max_pixels: int = 1024 * 1024
    max_count: int = 4
    max_prompt_chars: int = 1500
    max_negative_chars: int = 1500
    max_guidance: float = 30.0
