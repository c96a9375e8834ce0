"""Warn when a prompt is longer than the text encoder reads.

Stable Diffusion's CLIP text encoders read a 77-token window: a begin and an end
token around 75 tokens of prompt. Pipelines silently drop the rest, so a user
who wrote a long prompt should be told where it was cut, quoting the last words
kept and the first words dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

CLIP_WINDOW = 77
SPECIAL_TOKENS = 2  # begin and end of text
QUOTED_WORDS = 3
QUOTED_CHARS = 40


@runtime_checkable
class TokenizerLike(Protocol):
    """The part of a `transformers` tokenizer this module uses."""

    def __call__(self, text: str, **kwargs: Any) -> Any: ...

    def encode(self, text: str, **kwargs: Any) -> Sequence[int]: ...

    def decode(self, ids: Sequence[int], **kwargs: Any) -> str: ...


Tokenize = Callable[[str], Sequence[int]] | TokenizerLike


@dataclass(frozen=True)
class _Cut:
    """Where a prompt was cut: its token count, the text read and the text dropped."""

    tokens: int
    kept: str
    dropped: str


def truncation_warning(tokenize: Tokenize, prompt: str, window: int = CLIP_WINDOW) -> str | None:
    """A warning when `prompt` is longer than the `window`-token text encoder reads.

    `tokenize` is a `transformers` tokenizer (or anything with its `__call__`,
    `encode` and `decode`), or a plain function from text to token ids without the
    special tokens. None when the prompt fits.
    """
    usable = window - SPECIAL_TOKENS
    if isinstance(tokenize, TokenizerLike):
        cut = _cut_with_tokenizer(tokenize, prompt, usable)
    else:
        cut = _cut_by_prefix(tokenize, prompt, usable)
    if cut is None:
        return None
    return (
        f"prompt is {cut.tokens} tokens; the text encoder reads {usable}, "
        f"so it stops after {_last_words(cut.kept)} and ignores {_first_words(cut.dropped)}"
    )


def _cut_with_tokenizer(tokenizer: TokenizerLike, prompt: str, usable: int) -> _Cut | None:
    """Cut at the character offsets a fast tokenizer reports, else by decoding the ids."""
    try:
        encoding = tokenizer(
            prompt, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        ids = list(tokenizer.encode(prompt, add_special_tokens=False, verbose=False))
        if len(ids) <= usable:
            return None
        return _Cut(len(ids), tokenizer.decode(ids[:usable]), tokenizer.decode(ids[usable:]))
    if len(ids) <= usable:
        return None
    end = offsets[usable - 1][1]
    return _Cut(len(ids), prompt[:end], prompt[end:])


def _cut_by_prefix(
    tokenize: Callable[[str], Sequence[int]], prompt: str, usable: int
) -> _Cut | None:
    """Cut at the longest prefix that fits, found by bisection (about 13 calls for
    6000 characters). A prefix may tokenize a cut word differently, so it is close."""
    total = len(tokenize(prompt))
    if total <= usable:
        return None
    low, high = 0, len(prompt)
    while low < high:
        middle = (low + high + 1) // 2
        if len(tokenize(prompt[:middle])) <= usable:
            low = middle
        else:
            high = middle - 1
    return _Cut(total, prompt[:low], prompt[low:])


def _last_words(text: str) -> str:
    """The last few words of `text`, quoted, with '…' where more came before."""
    words = text.split()
    shown = " ".join(words[-QUOTED_WORDS:])
    if len(shown) > QUOTED_CHARS:
        shown = shown[-QUOTED_CHARS:]
    return f"'…{shown}'" if len(shown) < len(" ".join(words)) else f"'{shown}'"


def _first_words(text: str) -> str:
    """The first few words of `text`, quoted, with '…' where more come after."""
    words = text.split()
    shown = " ".join(words[:QUOTED_WORDS])
    if len(shown) > QUOTED_CHARS:
        shown = shown[:QUOTED_CHARS]
    return f"'{shown}…'" if len(shown) < len(" ".join(words)) else f"'{shown}'"
