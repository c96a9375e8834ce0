"""Turn what a user typed into one validated `GenerationRequest`, or say which rule failed.

Precedence, for each setting (first match wins):

1. an inline flag in the prompt (`--steps 30`);
2. the same option given explicitly (a slash-command option);
3. the user's saved defaults;
4. the model family's preset (native size, steps, guidance, scheduler).

`--no` terms are appended, comma-joined, to the negative prompt that applies
otherwise: the explicit negative prompt, or, when none is given, the saved default
one (an explicit empty negative prompt clears the saved one).
The size is taken whole from the first level that sets any of aspect, width or
height; one level setting both an aspect and a size is an error, and a side it
leaves out is the family's native size. An aspect ratio is snapped to the model's
native area in multiples of 64. With no size anywhere, an image job takes its
input image's size (multiples of 8, scaled down to fit the pixel limit) and a
text job the native square.
A saved default model that is no longer configured falls back to the registry's
default; an unknown model named by a flag or an option is an error.
Guidance-free (Turbo) families ignore the saved steps and guidance, which were
chosen for other models: they get their preset (guidance 0, few steps).
An unset seed is drawn at random; an unset count is 4 (the Midjourney grid),
capped by the limit; an unset strength is 0.75 for image jobs and 1.0 for text ones.

Every failure raises `InvalidRequest` (or a subclass) whose `.rule` names the rule
("steps", "width", "prompt", ...) and whose message names the offending value.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from typing import TypedDict

from generation.errors import InvalidRequest, UnknownModel
from generation.flags import ASPECT_PART_MAX, parse_aspect, parse_prompt, shown
from generation.models import SCHEDULERS, Family, ModelRegistry, ModelSpec
from generation.request import SEED_MAX, GenerationRequest, Kind, Limits, RequestOptions

MIN_SIDE = 64
MAX_SIDE = 2048
SIDE_STEP = 8
ASPECT_STEP = 64
MAX_RATIO = 4
DEFAULT_COUNT = 4
DEFAULT_IMAGE_STRENGTH = 0.75

# Control characters are refused (tab, CR and LF become spaces); lone surrogates too.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Zero-width and bidirectional-override characters are removed: they arrive by
# copy-paste, mean nothing to the text encoder, and can hide or reorder text.
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_SPACES = str.maketrans("\t\n\r", "   ")

_SYSTEM_RNG = random.SystemRandom()


class _Size(TypedDict):
    width: int
    height: int


class _Numbers(TypedDict):
    steps: int
    guidance: float
    count: int
    seed: int
    scheduler: str
    strength: float


# Which option fields a rule reads, to tell the user when a saved default broke it.
_RULE_FIELDS: dict[str, tuple[str, ...]] = {
    "size": ("width", "height", "aspect"),
    "aspect": ("aspect",),
    "width": ("width",),
    "height": ("height",),
    "steps": ("steps",),
    "guidance": ("guidance",),
    "count": ("count",),
    "seed": ("seed",),
    "scheduler": ("scheduler",),
    "strength": ("strength",),
}


def clean_text(text: str, *, rule: str, label: str) -> str:
    """`text` with invisible characters removed and tabs/newlines as spaces.

    Raises `InvalidRequest(rule)` for a control character, naming it and its place.
    """
    bad = _CONTROL.search(text)
    if bad is not None:
        raise InvalidRequest(
            rule,
            f"{label} contains the control character U+{ord(bad[0]):04X} at character "
            f"{bad.start() + 1}; remove it",
        )
    return " ".join(_INVISIBLE.sub("", text).translate(_SPACES).split())


def build_request(
    text: str,
    options: RequestOptions,
    *,
    defaults: RequestOptions,
    registry: ModelRegistry,
    limits: Limits,
    kind: Kind = Kind.TXT2IMG,
    init_image: bytes | None = None,
    init_size: tuple[int, int] | None = None,
    rng: random.Random | None = None,
) -> GenerationRequest:
    """Merge flags in `text`, explicit `options`, saved `defaults` and the model's
    preset (see the module docstring for the order) and check every rule."""
    prompt, flags = parse_prompt(clean_text(text, rule="prompt", label="prompt"))
    user = flags.merged_over(dataclasses.replace(options, negative_prompt=None))
    spec = _resolve_model(user.model, defaults.model, registry)
    if spec.family.guidance_free:
        defaults = dataclasses.replace(defaults, steps=None, guidance=None)
    try:
        if kind.needs_image and not init_image:
            raise InvalidRequest("image", f"{kind.value} needs an input image; attach one")
        return GenerationRequest(
            prompt=_check_prompt(prompt, limits),
            negative_prompt=_negative_prompt(flags, options, defaults, limits),
            **_size_fields([flags, options, defaults], spec.family, limits, kind, init_size),
            **_number_fields(user.merged_over(defaults), spec.family, limits, kind, rng),
            model=spec.name,
            kind=kind,
            init_image=init_image if kind.needs_image else None,
        )
    except InvalidRequest as exc:
        raise _blame_defaults(exc, user, defaults) from None


def _blame_defaults(
    exc: InvalidRequest, user: RequestOptions, defaults: RequestOptions
) -> InvalidRequest:
    """`exc`, saying so when the value that broke the rule came from the saved defaults."""
    fields = _RULE_FIELDS.get(exc.rule, ())
    if (
        fields
        and all(getattr(user, f) is None for f in fields)
        and any(getattr(defaults, f) is not None for f in fields)
    ):
        return InvalidRequest(exc.rule, f"{exc} (from your saved defaults)")
    return exc


def _resolve_model(chosen: str | None, saved: str | None, registry: ModelRegistry) -> ModelSpec:
    known = registry.names()
    if chosen is not None and chosen.strip():
        if chosen.strip().lower() not in known:
            raise UnknownModel(chosen if len(chosen) <= 40 else chosen[:39] + "…", known)
        return registry.get(chosen)
    if saved is not None and saved.strip().lower() in known:
        return registry.get(saved)
    return registry.default


def _check_prompt(prompt: str, limits: Limits) -> str:
    if not prompt:
        raise InvalidRequest("prompt", "prompt is empty: describe the image before any --flags")
    if len(prompt) > limits.max_prompt_chars:
        raise InvalidRequest(
            "prompt",
            f"prompt is {len(prompt)} characters; the limit is {limits.max_prompt_chars}",
        )
    return prompt


def _negative_prompt(
    flags: RequestOptions, options: RequestOptions, defaults: RequestOptions, limits: Limits
) -> str:
    base = options.negative_prompt
    if base is None:
        base = defaults.negative_prompt or ""
    base = clean_text(base, rule="negative_prompt", label="negative prompt").rstrip(" ,")
    negative = ", ".join(part for part in (base, flags.negative_prompt) if part)
    if len(negative) > limits.max_negative_chars:
        raise InvalidRequest(
            "negative_prompt",
            f"negative prompt is {len(negative)} characters; "
            f"the limit is {limits.max_negative_chars}",
        )
    return negative


def _size_fields(
    levels: list[RequestOptions],
    family: Family,
    limits: Limits,
    kind: Kind,
    init_size: tuple[int, int] | None,
) -> _Size:
    """Width and height from the first level that sets any of them (see the docstring)."""
    for level in levels:
        sized = level.width is not None or level.height is not None
        if level.aspect is not None and sized:
            raise InvalidRequest(
                "size",
                f"give an aspect ratio or a size, not both; got aspect {shown(level.aspect)} "
                f"and size {level.width or family.native_size}x"
                f"{level.height or family.native_size}",
            )
        if level.aspect is not None:
            width, height = snap_aspect(_check_aspect(level.aspect), family, limits)
            return _checked_size(width, height, limits)
        if sized:
            width = level.width if level.width is not None else family.native_size
            height = level.height if level.height is not None else family.native_size
            return _checked_size(width, height, limits)
    if kind.needs_image and init_size is not None:
        return _checked_size(*fit_image_size(*init_size, limits), limits)
    return _checked_size(*snap_aspect((1, 1), family, limits), limits)


def _check_aspect(aspect: str) -> tuple[int, int]:
    parsed = parse_aspect(aspect)
    if parsed is None:
        raise InvalidRequest(
            "aspect",
            f"aspect must be W:H with whole numbers from 1 to {ASPECT_PART_MAX}, like 16:9, "
            f"got {shown(aspect)}",
        )
    wide, tall = parsed
    if max(wide, tall) > MAX_RATIO * min(wide, tall):
        raise InvalidRequest("aspect", f"aspect {wide}:{tall} is more extreme than {MAX_RATIO}:1")
    return parsed


def snap_aspect(ratio: tuple[int, int], family: Family, limits: Limits) -> tuple[int, int]:
    """The size of ratio `W:H` nearest the family's native area, in multiples of 64,
    shrunk one step at a time (keeping the ratio closest) until it fits the pixel limit."""
    area = min(family.native_pixels, limits.max_pixels)
    target = ratio[0] / ratio[1]
    width = _round_to(math.sqrt(area * target), ASPECT_STEP)
    height = _round_to(math.sqrt(area / target), ASPECT_STEP)
    while width * height > limits.max_pixels and max(width, height) > ASPECT_STEP:
        narrower = abs((width - ASPECT_STEP) / height - target) if width > ASPECT_STEP else math.inf
        shorter = abs(width / (height - ASPECT_STEP) - target) if height > ASPECT_STEP else math.inf
        if narrower <= shorter:
            width -= ASPECT_STEP
        else:
            height -= ASPECT_STEP
    return min(width, MAX_SIDE), min(height, MAX_SIDE)


def _round_to(value: float, step: int) -> int:
    return max(step, round(value / step) * step)


def fit_image_size(width: int, height: int, limits: Limits) -> tuple[int, int]:
    """An input image's size as an output size: scaled (keeping its ratio) to fit the pixel
    limit and the largest side, up to the smallest side if tiny, in multiples of 8."""
    if width <= 0 or height <= 0:
        raise InvalidRequest("image", f"the input image is {width}x{height}; it has no pixels")
    if max(width, height) > MAX_RATIO * min(width, height):
        raise InvalidRequest(
            "image",
            f"the input image is {width}x{height}, more extreme than {MAX_RATIO}:1; crop it",
        )
    scale = min(1.0, math.sqrt(limits.max_pixels / (width * height)), MAX_SIDE / max(width, height))
    scale = max(scale, MIN_SIDE / min(width, height))
    return _floor_side(width * scale), _floor_side(height * scale)


def _floor_side(value: float) -> int:
    return max(MIN_SIDE, int(value) // SIDE_STEP * SIDE_STEP)


def _checked_size(width: int, height: int, limits: Limits) -> _Size:
    for rule, side in (("width", width), ("height", height)):
        if not (MIN_SIDE <= side <= MAX_SIDE) or side % SIDE_STEP:
            raise InvalidRequest(
                rule,
                f"{rule} must be a multiple of {SIDE_STEP} between {MIN_SIDE} and {MAX_SIDE}, "
                f"got {side}",
            )
    if width * height > limits.max_pixels:
        raise InvalidRequest(
            "size",
            f"size {width}x{height} is {width * height} pixels; the limit is {limits.max_pixels}",
        )
    if max(width, height) > MAX_RATIO * min(width, height):
        raise InvalidRequest("size", f"size {width}x{height} is more extreme than {MAX_RATIO}:1")
    return _Size(width=width, height=height)


def _number_fields(
    chosen: RequestOptions, family: Family, limits: Limits, kind: Kind, rng: random.Random | None
) -> _Numbers:
    """Steps, guidance, count, seed, scheduler and strength, each from `chosen` or its default."""
    steps = chosen.steps if chosen.steps is not None else min(family.steps, limits.max_steps)
    guidance = chosen.guidance
    if guidance is None:
        guidance = min(family.guidance, limits.max_guidance)
    count = chosen.count if chosen.count is not None else min(DEFAULT_COUNT, limits.max_count)
    seed = chosen.seed if chosen.seed is not None else (rng or _SYSTEM_RNG).randint(0, SEED_MAX)
    strength = chosen.strength
    if strength is None:
        strength = DEFAULT_IMAGE_STRENGTH if kind.needs_image else 1.0
    return _Numbers(
        steps=_in_range("steps", steps, 1, limits.max_steps),
        guidance=_check_guidance(guidance, limits),
        count=_in_range("count", count, 1, limits.max_count),
        seed=_in_range("seed", seed, 0, SEED_MAX, what="a whole number"),
        scheduler=_check_scheduler(chosen.scheduler or family.scheduler),
        strength=_check_strength(strength),
    )


def _in_range(rule: str, value: int, low: int, high: int, what: str = "") -> int:
    if not low <= value <= high:
        kind = f"{what} " if what else ""
        raise InvalidRequest(rule, f"{rule} must be {kind}between {low} and {high}, got {value}")
    return value


def _number(value: float) -> str:
    """30.0 -> "30", 7.5 -> "7.5", nan -> "nan": numbers as a user would write them."""
    return str(int(value)) if math.isfinite(value) and value.is_integer() else repr(value)


def _check_guidance(guidance: float, limits: Limits) -> float:
    guidance = float(guidance)
    if not (math.isfinite(guidance) and 0 <= guidance <= limits.max_guidance):
        raise InvalidRequest(
            "guidance",
            f"guidance must be a finite number between 0 and {_number(limits.max_guidance)}, "
            f"got {_number(guidance)}",
        )
    return guidance


def _check_strength(strength: float) -> float:
    strength = float(strength)
    if not 0 < strength <= 1:  # also false for nan
        raise InvalidRequest(
            "strength",
            f"strength must be more than 0 and at most 1, got {_number(strength)}",
        )
    return strength


def _check_scheduler(name: str) -> str:
    """The canonical scheduler name: case, spaces and underscores are forgiven."""
    canonical = re.sub(r"[\s_]+", "-", name.strip().lower()).replace("dpmpp", "dpm++")
    if canonical not in SCHEDULERS:
        raise InvalidRequest(
            "scheduler", f"scheduler must be one of {', '.join(SCHEDULERS)}; got {shown(name)}"
        )
    return canonical
