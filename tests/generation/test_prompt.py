"""truncation_warning with the tiny model's byte-level CLIP tokenizer.

Each byte of a word is one token and spaces are none, so token counts are easy to
predict: `w01 w02 ... w25` is 75 tokens, exactly the usable window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from generation.prompt import truncation_warning
from generation.tiny import byte_vocab

FULL_WINDOW = " ".join(f"w{i:02}" for i in range(1, 26))  # 75 tokens


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=byte_vocab(), merges=[], model_max_length=77)


class SlowTokenizer:
    """A tokenizer without character offsets, like transformers' Python tokenizers."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, text: str, **kwargs: Any) -> Any:
        if kwargs.get("return_offsets_mapping"):
            raise NotImplementedError("return_offset_mapping is not available")
        return self.inner(text, **kwargs)

    def encode(self, text: str, **kwargs: Any) -> list[int]:
        return list(self.inner.encode(text, **kwargs))

    def decode(self, ids: Sequence[int], **kwargs: Any) -> str:
        return str(self.inner.decode(list(ids), **kwargs))


def count_bytes(text: str) -> list[int]:
    """A plain tokenize function: one id per byte of every word."""
    return list("".join(text.split()).encode())


@pytest.mark.parametrize("prompt", ["", "a lighthouse at dusk", FULL_WINDOW, FULL_WINDOW + "   "])
def test_prompts_that_fit_get_no_warning(tokenizer: Any, prompt: str) -> None:
    assert truncation_warning(tokenizer, prompt) is None
    assert truncation_warning(count_bytes, prompt) is None


def test_the_tiny_tokenizer_counts_one_token_per_byte(tokenizer: Any) -> None:
    ids = tokenizer.encode("x" * 100, add_special_tokens=False, verbose=False)
    assert len(ids) == 100
    encoding = tokenizer("ab cd", add_special_tokens=False, return_offsets_mapping=True)
    assert encoding["offset_mapping"] == [(0, 1), (1, 2), (3, 4), (4, 5)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (
            FULL_WINDOW + " and more words here",
            "prompt is 91 tokens; the text encoder reads 75, so it stops after "
            "'…w23 w24 w25' and ignores 'and more words…'",
        ),
        (
            FULL_WINDOW + " dusk",
            "prompt is 79 tokens; the text encoder reads 75, so it stops after "
            "'…w23 w24 w25' and ignores 'dusk'",
        ),
        (
            "x" * 72 + " a lighthouse at dusk",
            "prompt is 89 tokens; the text encoder reads 75, so it stops after "
            f"'…{'x' * 35} a li' and ignores 'ghthouse at dusk'",
        ),
        (
            "y" * 100,
            "prompt is 100 tokens; the text encoder reads 75, so it stops after "
            f"'…{'y' * 40}' and ignores '{'y' * 25}'",
        ),
    ],
)
def test_the_warning_quotes_where_the_prompt_was_cut(
    tokenizer: Any, prompt: str, expected: str
) -> None:
    assert truncation_warning(tokenizer, prompt) == expected
    assert truncation_warning(count_bytes, prompt) == expected


def test_the_cut_follows_offsets_through_spacing(tokenizer: Any) -> None:
    prompt = FULL_WINDOW.replace(" ", "   ") + ",\n  cinematic lighting"
    warning = truncation_warning(tokenizer, prompt)
    assert warning is not None
    assert "stops after '…w23 w24 w25' and ignores ', cinematic lighting'" in warning


def test_a_multibyte_character_is_not_split(tokenizer: Any) -> None:
    prompt = "a" * 74 + "é and more"  # é is two byte tokens: the 75th and 76th
    warning = truncation_warning(tokenizer, prompt)
    assert warning is not None and "é'" in warning and "ignores 'and more'" in warning


def test_a_tokenizer_without_offsets_falls_back_to_decoding(tokenizer: Any) -> None:
    # Decoding normalises the text as CLIP does: lower case, punctuation split off.
    prompt = "sea " * 24 + "sky Dusk, cinematic"
    warning = truncation_warning(SlowTokenizer(tokenizer), prompt)
    assert warning == (
        "prompt is 89 tokens; the text encoder reads 75, so it stops after "
        "'…sea sea sky' and ignores 'dusk , cinematic'"
    )


def test_the_window_can_be_set(tokenizer: Any) -> None:
    assert truncation_warning(tokenizer, "abcdefgh", window=10) is None
    warning = truncation_warning(tokenizer, "abcd efgh i", window=10)
    assert warning == (
        "prompt is 9 tokens; the text encoder reads 8, so it stops after "
        "'abcd efgh' and ignores 'i'"
    )
