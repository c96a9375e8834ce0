"""Inline Midjourney-style flags: `a lighthouse at dusk --ar 16:9 --seed 42 --no text, watermark`.

`parse_prompt` splits the flags out of the prompt text and returns the prose with
the flags' values as `RequestOptions`. It checks only that each value has the right
shape (a whole number, a `W:H` ratio, ...); ranges are `generation.validation`'s job,
except the seed's, which is part of its shape.

A flag is a whole word that starts with `--` (so `semi--colon` is prose). Phone
keyboards turn a typed `--` into an em dash, so `—ar` (and `–ar`, en dash) count
too, but only for known flag names: an em dash before any other word is prose.
`--name=value` is read like `--name value`. Every flag takes a value: the next
word, except `--no`, whose value runs until the next flag. Words after a value
that are not flags go back into the prompt.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from generation.errors import FlagError
from generation.request import SEED_MAX, RequestOptions

ASPECT_PART_MAX = 100

_FLAG_WORD = re.compile(r"(--|[—–])([a-z][^=]*)(?:=(.*))?", re.IGNORECASE | re.DOTALL)
_WHOLE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DECIMAL = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?|[+-]?(?:nan|inf|infinity)",
    re.IGNORECASE | re.ASCII,
)
_ASPECT = re.compile(r"([0-9]{1,3}):([0-9]{1,3})", re.ASCII)
_SIZE = re.compile(r"([0-9]{1,6})[x×]([0-9]{1,6})", re.ASCII | re.IGNORECASE)
_SHOWN_MAX = 40


@dataclass(frozen=True)
class _Flag:
    """How one flag is read: the `RequestOptions` field it fills and its value parser.

    `parse(flag, value)` gets the flag as `--name` (for messages) and the raw value.
    The pseudo-field "size" fills both width and height.
    """

    field: str
    parse: Callable[[str, str], object]
    runs_to_next_flag: bool = False


def parse_aspect(text: str) -> tuple[int, int] | None:
    """`"16:9"` -> `(16, 9)`; None unless both parts are whole numbers from 1 to 100."""
    match = _ASPECT.fullmatch(text.strip())
    if match is None:
        return None
    width, height = int(match[1]), int(match[2])
    if not (1 <= width <= ASPECT_PART_MAX and 1 <= height <= ASPECT_PART_MAX):
        return None
    return width, height


def shown(value: str) -> str:
    """A user's value quoted for an error message, shortened when it is long."""
    if len(value) > _SHOWN_MAX:
        value = value[: _SHOWN_MAX - 1] + "…"
    return repr(value)


def _whole(flag: str, value: str) -> int:
    if _WHOLE.fullmatch(value):
        try:
            return int(value)
        except ValueError:  # more digits than Python converts
            pass
    raise FlagError(flag, f"{flag} must be a whole number, got {shown(value)}")


def _decimal(flag: str, value: str) -> float:
    if _DECIMAL.fullmatch(value):
        return float(value)
    raise FlagError(flag, f"{flag} must be a number, got {shown(value)}")


def _seed(flag: str, value: str) -> int:
    if value.isascii() and value.isdigit() and len(value) <= 10 and int(value) <= SEED_MAX:
        return int(value)
    raise FlagError(
        flag, f"{flag} must be a whole number between 0 and {SEED_MAX}, got {shown(value)}"
    )


def _aspect(flag: str, value: str) -> str:
    parsed = parse_aspect(value)
    if parsed is None:
        raise FlagError(
            flag,
            f"{flag} must be W:H with whole numbers from 1 to {ASPECT_PART_MAX}, like 16:9, "
            f"got {shown(value)}",
        )
    return f"{parsed[0]}:{parsed[1]}"


def _size(flag: str, value: str) -> tuple[int, int]:
    match = _SIZE.fullmatch(value)
    if match is None:
        raise FlagError(
            flag, f"{flag} must be WIDTHxHEIGHT in pixels, like 768x512, got {shown(value)}"
        )
    return int(match[1]), int(match[2])


def _word(flag: str, value: str) -> str:
    return value


def _terms(flag: str, value: str) -> str:
    terms = [term.strip() for term in value.split(",")]
    joined = ", ".join(term for term in terms if term)
    if not joined:
        raise FlagError(flag, f"{flag} needs at least one term, like --no text, watermark")
    return joined


FLAGS: dict[str, _Flag] = {
    "ar": _Flag("aspect", _aspect),
    "aspect": _Flag("aspect", _aspect),
    "seed": _Flag("seed", _seed),
    "no": _Flag("negative_prompt", _terms, runs_to_next_flag=True),
    "steps": _Flag("steps", _whole),
    "cfg": _Flag("guidance", _decimal),
    "guidance": _Flag("guidance", _decimal),
    "n": _Flag("count", _whole),
    "count": _Flag("count", _whole),
    "model": _Flag("model", _word),
    "sampler": _Flag("scheduler", _word),
    "scheduler": _Flag("scheduler", _word),
    "strength": _Flag("strength", _decimal),
    "size": _Flag("size", _size),
}


_EXAMPLES = {
    "aspect": "--ar 16:9",
    "seed": "--seed 42",
    "negative_prompt": "--no text, watermark",
    "steps": "--steps 30",
    "guidance": "--cfg 7",
    "count": "--n 2",
    "model": "--model sd15",
    "scheduler": "--sampler euler-a",
    "strength": "--strength 0.6",
    "size": "--size 768x512",
}


# What each setting is for, as /help says it (keyed like `_EXAMPLES`). A flag for a new
# setting needs a line here: tests compare this table with FLAGS.
_HELP = {
    "aspect": "aspect ratio W:H, snapped to the model's native size",
    "size": "exact width and height in pixels",
    "seed": f"seed for repeatable images, 0-{SEED_MAX} (random if unset)",
    "negative_prompt": "what to keep out of the image; runs until the next flag",
    "steps": "denoising steps (more is slower, often finer)",
    "guidance": "how closely to follow the prompt (CFG scale)",
    "count": "how many images",
    "model": "which model draws it",
    "scheduler": "which sampler",
    "strength": "how much image-to-image changes the starting image, 0-1",
}


@dataclass(frozen=True)
class FlagHelp:
    """One setting that inline flags fill, as /help lists it.

    `names` are every flag (aliases too) that fills it, as typed: `("--ar", "--aspect")`.
    `text` is empty where `_HELP` has no line for the setting.
    """

    field: str
    names: tuple[str, ...]
    example: str
    text: str


def flag_help() -> list[FlagHelp]:
    """Every setting the parser accepts a flag for, in `FLAGS` order, with its flags."""
    names: dict[str, list[str]] = {}
    for name, spec in FLAGS.items():
        names.setdefault(spec.field, []).append(f"--{name}")
    return [
        FlagHelp(field, tuple(labels), _EXAMPLES.get(field, labels[0]), _HELP.get(field, ""))
        for field, labels in names.items()
    ]


@dataclass(frozen=True)
class _FlagWord:
    """A word of the prompt that is a flag: its name and any `=value` glued to it."""

    name: str
    inline_value: str | None

    @property
    def label(self) -> str:
        return f"--{self.name}"


def _as_flag(word: str) -> _FlagWord | None:
    """The flag this word is, or None when it is prose. Unknown `--names` are flags."""
    match = _FLAG_WORD.fullmatch(word)
    if match is None:
        return None
    dashes, name, inline_value = match[1], match[2].lower(), match[3]
    if dashes != "--" and name not in FLAGS:
        return None
    return _FlagWord(name, inline_value)


def _unknown(flag: _FlagWord) -> FlagError:
    glued = [
        name
        for name in FLAGS
        if flag.name.startswith(name) and not flag.name[len(name) :][:1].isalpha()
    ]
    close = difflib.get_close_matches(flag.name, list(FLAGS), n=1)
    hint = ""
    if glued:
        name = max(glued, key=len)
        hint = f" (did you mean --{name} {flag.name.removeprefix(name)}?)"
    elif close:
        hint = f" (did you mean --{close[0]}?)"
    known = ", ".join(f"--{name}" for name in FLAGS)
    return FlagError(flag.label, f"unknown flag {flag.label}{hint}; known flags: {known}")


def _take_value(flag: _FlagWord, spec: _Flag, words: list[str], start: int) -> tuple[str, int]:
    """The raw value of `flag`, whose next word is `words[start]`, and the index after it."""
    parts = [] if flag.inline_value is None else [flag.inline_value]
    end = start
    while end < len(words) and _as_flag(words[end]) is None:
        if parts and not spec.runs_to_next_flag:
            break
        parts.append(words[end])
        end += 1
    value = " ".join(parts).strip()
    if not value:
        raise FlagError(flag.label, f"{flag.label} needs a value, like {_EXAMPLES[spec.field]}")
    return value, end


def parse_prompt(text: str) -> tuple[str, RequestOptions]:
    """Split inline flags out of `text`: (the prose, the flags' values as options).

    The prose is stripped with whitespace runs collapsed to one space. Raises
    `FlagError` for an unknown flag, a malformed or missing value, or a flag given
    twice (aliases count as the same flag).
    """
    words = text.split()
    prose: list[str] = []
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    index = 0
    while index < len(words):
        flag = _as_flag(words[index])
        if flag is None:
            prose.append(words[index])
            index += 1
            continue
        spec = FLAGS.get(flag.name)
        if spec is None:
            raise _unknown(flag)
        if spec.field in given:
            raise FlagError(
                flag.label, f"{flag.label} is given twice (first as {given[spec.field]})"
            )
        raw, index = _take_value(flag, spec, words, index + 1)
        given[spec.field] = flag.label
        values[spec.field] = spec.parse(flag.label, raw)
    return " ".join(prose), _options(values)


def _options(values: dict[str, Any]) -> RequestOptions:
    if "size" in values:
        values["width"], values["height"] = values.pop("size")
    return RequestOptions(**values)
