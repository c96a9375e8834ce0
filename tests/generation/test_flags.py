"""Inline flags: each flag and alias, malformed values, unknown and repeated flags."""

from __future__ import annotations

import pytest

from generation.errors import FlagError
from generation.flags import FLAGS, parse_aspect, parse_prompt
from generation.request import SEED_MAX, RequestOptions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a cat --ar 16:9", RequestOptions(aspect="16:9")),
        ("a cat --aspect 2:3", RequestOptions(aspect="2:3")),
        ("a cat --ar 016:09", RequestOptions(aspect="16:9")),
        ("a cat --seed 42", RequestOptions(seed=42)),
        ("a cat --seed 0", RequestOptions(seed=0)),
        (f"a cat --seed {SEED_MAX}", RequestOptions(seed=SEED_MAX)),
        ("a cat --no text, watermark", RequestOptions(negative_prompt="text, watermark")),
        ("a cat --no text,watermark,, ", RequestOptions(negative_prompt="text, watermark")),
        ("a cat --steps 30", RequestOptions(steps=30)),
        ("a cat --cfg 7.5", RequestOptions(guidance=7.5)),
        ("a cat --guidance 7", RequestOptions(guidance=7.0)),
        ("a cat --n 2", RequestOptions(count=2)),
        ("a cat --count 3", RequestOptions(count=3)),
        ("a cat --model xl", RequestOptions(model="xl")),
        ("a cat --sampler euler-a", RequestOptions(scheduler="euler-a")),
        ("a cat --scheduler ddim", RequestOptions(scheduler="ddim")),
        ("a cat --strength 0.6", RequestOptions(strength=0.6)),
        ("a cat --size 768x512", RequestOptions(width=768, height=512)),
        ("a cat --size 768X512", RequestOptions(width=768, height=512)),
        ("a cat --seed=42", RequestOptions(seed=42)),
        ("a cat --AR 16:9", RequestOptions(aspect="16:9")),
    ],
)
def test_each_flag_and_alias(text: str, expected: RequestOptions) -> None:
    assert parse_prompt(text) == ("a cat", expected)


def test_every_flag_is_covered_above() -> None:
    assert set(FLAGS) == {
        "ar",
        "aspect",
        "seed",
        "no",
        "steps",
        "cfg",
        "guidance",
        "n",
        "count",
        "model",
        "sampler",
        "scheduler",
        "strength",
        "size",
    }


def test_all_flags_together() -> None:
    text = (
        "a lighthouse at dusk --ar 16:9 --seed 42 --no text, watermark "
        "--steps 30 --cfg 7 --n 2 --model xl --sampler dpm++ --strength 0.5"
    )
    assert parse_prompt(text) == (
        "a lighthouse at dusk",
        RequestOptions(
            negative_prompt="text, watermark",
            aspect="16:9",
            steps=30,
            guidance=7.0,
            seed=42,
            count=2,
            model="xl",
            scheduler="dpm++",
            strength=0.5,
        ),
    )


@pytest.mark.parametrize(
    ("text", "prose", "expected"),
    [
        ("no flags here", "no flags here", RequestOptions()),
        ("  spaced \n\t out   prompt  ", "spaced out prompt", RequestOptions()),
        ("semi--colon and a--b", "semi--colon and a--b", RequestOptions()),
        ("a cat — the best cat", "a cat — the best cat", RequestOptions()),
        ("a cat -- or a dog --", "a cat -- or a dog --", RequestOptions()),
        ("a cat —ar 16:9", "a cat", RequestOptions(aspect="16:9")),
        ("a cat –seed 7", "a cat", RequestOptions(seed=7)),
        ("a cat —hello there", "a cat —hello there", RequestOptions()),
        ("--seed 4 a cat", "a cat", RequestOptions(seed=4)),
        ("a cat --ar 2:3 on a mat", "a cat on a mat", RequestOptions(aspect="2:3")),
        ("a cat --no dogs, birds --seed 1", "a cat", RequestOptions("dogs, birds", seed=1)),
        ("a cat --no=dogs birds", "a cat", RequestOptions(negative_prompt="dogs birds")),
    ],
)
def test_prose_and_flag_boundaries(text: str, prose: str, expected: RequestOptions) -> None:
    assert parse_prompt(text) == (prose, expected)


@pytest.mark.parametrize(
    ("text", "flag", "value"),
    [
        ("a cat --seed abc", "--seed", "'abc'"),
        ("a cat --seed -1", "--seed", "'-1'"),
        ("a cat --seed 1.5", "--seed", "'1.5'"),
        (f"a cat --seed {SEED_MAX + 1}", "--seed", f"'{SEED_MAX + 1}'"),
        ("a cat --seed 99999999999999999999", "--seed", "'99999999999999999999'"),
        ("a cat --seed ٣", "--seed", "'٣'"),
        ("a cat --ar 16-9", "--ar", "'16-9'"),
        ("a cat --ar 16:0", "--ar", "'16:0'"),
        ("a cat --aspect 101:1", "--aspect", "'101:1'"),
        ("a cat --ar wide", "--ar", "'wide'"),
        ("a cat --steps many", "--steps", "'many'"),
        ("a cat --steps 2.5", "--steps", "'2.5'"),
        ("a cat --n two", "--n", "'two'"),
        ("a cat --count 1_0", "--count", "'1_0'"),
        ("a cat --cfg high", "--cfg", "'high'"),
        ("a cat --guidance 7,5", "--guidance", "'7,5'"),
        ("a cat --strength 1_0", "--strength", "'1_0'"),
        ("a cat --size 768*512", "--size", "'768*512'"),
        ("a cat --size big", "--size", "'big'"),
    ],
)
def test_malformed_values_name_flag_and_value(text: str, flag: str, value: str) -> None:
    with pytest.raises(FlagError) as caught:
        parse_prompt(text)
    assert caught.value.flag == flag
    assert caught.value.rule == f"flag {flag}"
    assert str(caught.value).startswith(flag)
    assert f"got {value}" in str(caught.value)


def test_seed_message_gives_the_range() -> None:
    with pytest.raises(
        FlagError,
        match=r"^--seed must be a whole number between 0 and "
        r"4294967295, got 'abc'$",
    ):
        parse_prompt("a cat --seed abc")


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        ("a cat --steps", "--steps"),
        ("a cat --steps --seed 4", "--steps"),
        ("a cat --seed=", "--seed"),
        ("a cat --no", "--no"),
        ("a cat --no , ,", "--no"),
        ("a cat --no --ar 2:3", "--no"),
        ("a cat --model", "--model"),
    ],
)
def test_missing_values(text: str, flag: str) -> None:
    with pytest.raises(FlagError, match=f"^{flag} needs") as caught:
        parse_prompt(text)
    assert caught.value.flag == flag


@pytest.mark.parametrize(
    ("text", "flag", "hint"),
    [
        ("a cat --foo 3", "--foo", ""),
        ("a cat --sed 3", "--sed", "did you mean --seed?"),
        ("a cat --ar16:9", "--ar16:9", "did you mean --ar 16:9?"),
        ("a cat --no, dogs", "--no,", "did you mean --no ,?"),
        ("a cat --Sede 3", "--sede", "did you mean --seed?"),
        ("a cat --steps30", "--steps30", "did you mean --steps 30?"),
        ("a cat --noise 3", "--noise", ""),
        ("a cat --no dogs --quality 2", "--quality", ""),
    ],
)
def test_unknown_flags(text: str, flag: str, hint: str) -> None:
    with pytest.raises(FlagError) as caught:
        parse_prompt(text)
    assert caught.value.flag == flag
    assert str(caught.value).startswith(f"unknown flag {flag}")
    assert hint in str(caught.value)
    assert hint or "did you mean" not in str(caught.value)
    assert "--ar" in str(caught.value)  # the known flags are listed


@pytest.mark.parametrize(
    ("text", "flag", "first"),
    [
        ("a cat --seed 1 --seed 2", "--seed", "--seed"),
        ("a cat --cfg 7 --guidance 8", "--guidance", "--cfg"),
        ("a cat --ar 1:1 —aspect 2:3", "--aspect", "--ar"),
        ("a cat --n 1 --count 2", "--count", "--n"),
        ("a cat --sampler euler --scheduler ddim", "--scheduler", "--sampler"),
        ("a cat --no a --no b", "--no", "--no"),
    ],
)
def test_a_flag_given_twice(text: str, flag: str, first: str) -> None:
    with pytest.raises(FlagError, match=f"given twice \\(first as {first}\\)") as caught:
        parse_prompt(text)
    assert caught.value.flag == flag


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(FlagError) as caught:
        parse_prompt("a cat --steps " + "x" * 5000)
    assert len(str(caught.value)) < 120


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16:9", (16, 9)),
        (" 1:1 ", (1, 1)),
        ("100:100", (100, 100)),
        ("0:1", None),
        ("101:2", None),
        ("16x9", None),
        ("16:9:1", None),
        ("", None),
        ("-1:2", None),
    ],
)
def test_parse_aspect(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_aspect(text) == expected
