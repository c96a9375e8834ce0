"""build_request: precedence, size snapping, every range rule and its message."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from generation.errors import InvalidRequest, UnknownModel
from generation.models import FAMILIES, Family, ModelRegistry
from generation.request import SEED_MAX, GenerationRequest, Kind, Limits, RequestOptions
from generation.validation import build_request, fit_image_size, snap_aspect

REGISTRY = ModelRegistry.from_entries(
    [
        "sd15=stable-diffusion-v1-5/stable-diffusion-v1-5",
        "xl=stabilityai/stable-diffusion-xl-base-1.0",
        "turbo=stabilityai/sd-turbo",
    ]
)
LIMITS = Limits()
NONE = RequestOptions()


def build(
    text: str = "a lighthouse at dusk",
    options: RequestOptions = NONE,
    defaults: RequestOptions = NONE,
    **kwargs: Any,
) -> GenerationRequest:
    kwargs.setdefault("limits", LIMITS)
    kwargs.setdefault("rng", random.Random(0))
    return build_request(text, options, defaults=defaults, registry=REGISTRY, **kwargs)


def refused(text: str = "a cat", options: RequestOptions = NONE, **kwargs: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        build(text, options, **kwargs)
    return caught.value


def test_a_plain_prompt_gets_the_default_model_and_its_preset() -> None:
    request = build("  a lighthouse\n at dusk ")
    assert request.prompt == "a lighthouse at dusk"
    assert (request.model, request.width, request.height) == ("sd15", 512, 512)
    assert (request.steps, request.guidance, request.scheduler) == (25, 7.0, "euler")
    assert (request.count, request.negative_prompt, request.kind) == (4, "", Kind.TXT2IMG)
    assert 0 <= request.seed <= SEED_MAX


# field, flag text, flag value, option value, saved default, preset (None: random)
PRECEDENCE = [
    ("steps", "--steps 30", 30, 20, 10, 25),
    ("guidance", "--cfg 9", 9.0, 8.0, 5.0, 7.0),
    ("scheduler", "--sampler ddim", "ddim", "lms", "pndm", "euler"),
    ("count", "--n 1", 1, 2, 3, 4),
    ("seed", "--seed 5", 5, 6, 7, None),
    ("strength", "--strength 0.3", 0.3, 0.4, 0.5, 1.0),
]


@pytest.mark.parametrize(("field", "flag", "flagged", "option", "default", "preset"), PRECEDENCE)
def test_flag_beats_option_beats_default_beats_preset(
    field: str, flag: str, flagged: Any, option: Any, default: Any, preset: Any
) -> None:
    options = RequestOptions(**{field: option})
    defaults = RequestOptions(**{field: default})
    assert getattr(build(f"a cat {flag}", options, defaults), field) == flagged
    assert getattr(build("a cat", options, defaults), field) == option
    assert getattr(build("a cat", NONE, defaults), field) == default
    if preset is not None:
        assert getattr(build("a cat"), field) == preset


def test_model_precedence() -> None:
    options, defaults = RequestOptions(model="turbo"), RequestOptions(model="tiny")
    assert build("a cat --model XL", options, defaults).model == "xl"
    assert build("a cat", options, defaults).model == "turbo"
    assert build("a cat", NONE, defaults).model == "tiny"
    assert build("a cat").model == "sd15"


def test_a_saved_model_that_is_gone_falls_back_to_the_registry_default() -> None:
    assert build("a cat", NONE, RequestOptions(model="removed-model")).model == "sd15"


@pytest.mark.parametrize(
    ("text", "options"),
    [
        ("a cat --model nope", NONE),
        ("a cat", RequestOptions(model="nope")),
        ("a cat --model ../../etc/passwd", NONE),
        ("a cat", RequestOptions(model="../../etc/passwd")),
        ("a cat", RequestOptions(model="/home/user/model.safetensors")),
    ],
)
def test_an_unknown_chosen_model_is_refused_with_the_known_ones(
    text: str, options: RequestOptions
) -> None:
    with pytest.raises(UnknownModel) as caught:
        build(text, options, RequestOptions(model="xl"))
    assert caught.value.rule == "model"
    assert "sd15, xl, turbo, tiny" in str(caught.value)
    assert repr(caught.value.name) in str(caught.value)


def test_a_very_long_model_name_is_shortened_in_the_message() -> None:
    with pytest.raises(UnknownModel) as caught:
        build("a cat", RequestOptions(model="x" * 3000))
    assert len(str(caught.value)) < 150


@pytest.mark.parametrize(
    ("text", "explicit", "saved", "expected"),
    [
        ("a cat --no text, watermark", None, None, "text, watermark"),
        ("a cat --no text", "blurry,", None, "blurry, text"),
        ("a cat --no text, watermark", "blurry", "lowres", "blurry, text, watermark"),
        ("a cat --no text", None, "lowres", "lowres, text"),
        ("a cat --no text", "", "lowres", "text"),
        ("a cat", None, "lowres", "lowres"),
        ("a cat", "", "lowres", ""),
        ("a cat", "blurry", "lowres", "blurry"),
        ("a cat", "  ugly\n\tdeformed \u200b", None, "ugly deformed"),
    ],
)
def test_no_terms_join_the_negative_prompt(
    text: str, explicit: str | None, saved: str | None, expected: str
) -> None:
    options = RequestOptions(negative_prompt=explicit)
    defaults = RequestOptions(negative_prompt=saved)
    assert build(text, options, defaults).negative_prompt == expected


@pytest.mark.parametrize(
    ("model", "aspect", "expected"),
    [
        ("sd15", "1:1", (512, 512)),
        ("sd15", "16:9", (704, 384)),
        ("sd15", "9:16", (384, 704)),
        ("sd15", "2:3", (448, 640)),
        ("sd15", "4:1", (1024, 256)),
        ("xl", "1:1", (1024, 1024)),
        ("xl", "16:9", (1344, 768)),
        ("xl", "3:2", (1216, 832)),
        ("xl", "21:9", (1536, 640)),
        ("turbo", "16:9", (704, 384)),
        ("tiny", "1:1", (256, 256)),
    ],
)
def test_aspect_snaps_to_the_native_area(
    model: str, aspect: str, expected: tuple[int, int]
) -> None:
    request = build(f"a cat --ar {aspect} --model {model}")
    assert (request.width, request.height) == expected
    native = REGISTRY.get(model).family.native_pixels
    assert request.width % 64 == 0 and request.height % 64 == 0
    assert abs(request.width * request.height - native) <= 0.1 * native
    wide, tall = map(int, aspect.split(":"))
    assert request.width / request.height == pytest.approx(wide / tall, rel=0.1)
    assert build("a cat", RequestOptions(aspect=aspect, model=model)).width == expected[0]


@pytest.mark.parametrize("family", list(FAMILIES.values()), ids=lambda f: f.name)
@pytest.mark.parametrize("limits", [LIMITS, Limits(max_pixels=512 * 512)], ids=["1M", "256K"])
def test_every_allowed_ratio_snaps_to_a_valid_size(family: Family, limits: Limits) -> None:
    for wide in range(1, 101):
        for tall in range(1, 101):
            if math.gcd(wide, tall) != 1 or max(wide, tall) > 4 * min(wide, tall):
                continue
            width, height = snap_aspect((wide, tall), family, limits)
            assert width % 64 == 0 and height % 64 == 0, (wide, tall)
            assert 64 <= min(width, height) and max(width, height) <= 2048, (wide, tall)
            assert width * height <= limits.max_pixels, (wide, tall)
            assert max(width, height) <= 4 * min(width, height), (wide, tall)


def test_a_low_pixel_limit_shrinks_the_native_size() -> None:
    request = build("a cat --model xl", limits=Limits(max_pixels=512 * 512))
    assert (request.width, request.height) == (512, 512)


@pytest.mark.parametrize(
    ("text", "options", "defaults", "size"),
    [
        ("a cat --size 768x512", NONE, NONE, (768, 512)),
        ("a cat", RequestOptions(width=768, height=512), NONE, (768, 512)),
        ("a cat", RequestOptions(width=768), NONE, (768, 512)),
        ("a cat", RequestOptions(height=640), NONE, (512, 640)),
        ("a cat --size 768x512", RequestOptions(aspect="1:1"), NONE, (768, 512)),
        ("a cat --ar 16:9", RequestOptions(width=512, height=768), NONE, (704, 384)),
        ("a cat", RequestOptions(aspect="2:3"), RequestOptions(width=768, height=512), (448, 640)),
        ("a cat", RequestOptions(width=576, height=576), RequestOptions(aspect="16:9"), (576, 576)),
        ("a cat", NONE, RequestOptions(aspect="16:9"), (704, 384)),
        ("a cat", NONE, RequestOptions(width=640, height=512), (640, 512)),
    ],
)
def test_size_comes_whole_from_the_first_level_that_sets_it(
    text: str, options: RequestOptions, defaults: RequestOptions, size: tuple[int, int]
) -> None:
    request = build(text, options, defaults)
    assert (request.width, request.height) == size


@pytest.mark.parametrize(
    ("text", "options"),
    [
        ("a cat --ar 16:9 --size 768x512", NONE),
        ("a cat", RequestOptions(aspect="16:9", width=768)),
    ],
)
def test_aspect_and_size_on_one_level_are_refused(text: str, options: RequestOptions) -> None:
    error = refused(text, options)
    assert error.rule == "size"
    assert "16:9" in str(error) and "768x512" in str(error)


RANGE_ERRORS = [
    # (text, options, rule, exact message or a part of it)
    ("a --steps 0", NONE, "steps", "steps must be between 1 and 60, got 0"),
    ("a --steps 61", NONE, "steps", "steps must be between 1 and 60, got 61"),
    ("a", RequestOptions(steps=-5), "steps", "steps must be between 1 and 60, got -5"),
    ("a --cfg -1", NONE, "guidance", "between 0 and 30, got -1"),
    ("a --cfg 30.5", NONE, "guidance", "between 0 and 30, got 30.5"),
    ("a --cfg nan", NONE, "guidance", "guidance must be a finite number between 0 and 30, got nan"),
    ("a --cfg inf", NONE, "guidance", "got inf"),
    ("a --cfg -inf", NONE, "guidance", "got -inf"),
    ("a --cfg 1e999", NONE, "guidance", "got inf"),
    ("a", RequestOptions(guidance=math.nan), "guidance", "got nan"),
    ("a --n 0", NONE, "count", "count must be between 1 and 4, got 0"),
    ("a --n 5", NONE, "count", "count must be between 1 and 4, got 5"),
    (
        "a",
        RequestOptions(seed=-1),
        "seed",
        "seed must be a whole number between 0 and 4294967295, got -1",
    ),
    ("a", RequestOptions(seed=2**32), "seed", f"got {2**32}"),
    ("a --strength 0", NONE, "strength", "strength must be more than 0 and at most 1, got 0"),
    ("a --strength 1.5", NONE, "strength", "got 1.5"),
    ("a --strength nan", NONE, "strength", "got nan"),
    ("a --sampler foo", NONE, "scheduler", "scheduler must be one of euler, euler-a"),
    ("a", RequestOptions(scheduler="k_lms?"), "scheduler", "got 'k_lms?'"),
    (
        "a",
        RequestOptions(width=0),
        "width",
        "width must be a multiple of 8 between 64 and 2048, got 0",
    ),
    ("a", RequestOptions(width=-8), "width", "got -8"),
    ("a", RequestOptions(width=13), "width", "got 13"),
    (
        "a",
        RequestOptions(width=513),
        "width",
        "width must be a multiple of 8 between 64 and 2048, got 513",
    ),
    ("a", RequestOptions(width=100000), "width", "got 100000"),
    (
        "a",
        RequestOptions(height=13),
        "height",
        "height must be a multiple of 8 between 64 and 2048, got 13",
    ),
    ("a --size 0x512", NONE, "width", "got 0"),
    ("a --size 512x100000", NONE, "height", "got 100000"),
    ("a --size 2048x2048", NONE, "size", "size 2048x2048 is 4194304 pixels; the limit is 1048576"),
    ("a --size 2048x448", NONE, "size", "size 2048x448 is more extreme than 4:1"),
    ("a --ar 5:1", NONE, "aspect", "aspect 5:1 is more extreme than 4:1"),
    ("a --ar 1:100", NONE, "aspect", "aspect 1:100 is more extreme than 4:1"),
    ("a", RequestOptions(aspect="16-9"), "aspect", "got '16-9'"),
    ("a", RequestOptions(aspect="0:0"), "aspect", "got '0:0'"),
]


@pytest.mark.parametrize(("text", "options", "rule", "message"), RANGE_ERRORS)
def test_every_range_error_names_the_rule_and_value(
    text: str, options: RequestOptions, rule: str, message: str
) -> None:
    error = refused(text, options)
    assert error.rule == rule
    assert message in str(error)
    assert "saved defaults" not in str(error)


def test_a_broken_saved_default_says_where_it_came_from() -> None:
    error = refused("a cat", NONE, defaults=RequestOptions(steps=80))
    assert str(error) == "steps must be between 1 and 60, got 80 (from your saved defaults)"
    error = refused("a cat", NONE, defaults=RequestOptions(width=13))
    assert error.rule == "width" and str(error).endswith("(from your saved defaults)")


@pytest.mark.parametrize(
    ("limits", "field", "expected"),
    [
        (Limits(max_steps=10), "steps", 10),
        (Limits(max_count=1), "count", 1),
        (Limits(max_guidance=5.0), "guidance", 5.0),
    ],
)
def test_presets_are_capped_by_the_limits(limits: Limits, field: str, expected: object) -> None:
    assert getattr(build("a cat", limits=limits), field) == expected


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("Euler_A", "euler-a"),
        ("euler a", "euler-a"),
        ("DPM++", "dpm++"),
        ("dpmpp", "dpm++"),
        ("dpm++ karras", "dpm++-karras"),
        ("UniPC", "unipc"),
    ],
)
def test_scheduler_names_are_forgiving(name: str, canonical: str) -> None:
    assert build("a cat", RequestOptions(scheduler=name)).scheduler == canonical


def test_guidance_free_models_ignore_saved_steps_and_guidance() -> None:
    defaults = RequestOptions(steps=40, guidance=7.5)
    request = build("a cat --model turbo", NONE, defaults)
    assert (request.steps, request.guidance, request.scheduler) == (2, 0.0, "euler-a")
    assert build("a cat --model turbo --cfg 1.5 --steps 4").guidance == 1.5
    assert build("a cat --model turbo --cfg 1.5 --steps 4").steps == 4
    assert build("a cat --model sd15", NONE, defaults).steps == 40


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a \x07cat", "prompt contains the control character U+0007 at character 3"),
        ("\x00", "U+0000 at character 1"),
        ("red \x1b[31m cat", "U+001B at character 5"),
        ("cat\x7f", "U+007F at character 4"),
        ("cat \x85", "U+0085 at character 5"),
        ("cat \ud800", "U+D800 at character 5"),
    ],
)
def test_control_characters_are_refused_with_their_place(text: str, message: str) -> None:
    error = refused(text)
    assert error.rule == "prompt"
    assert message in str(error)


def test_control_characters_in_the_negative_prompt() -> None:
    error = refused("a cat", RequestOptions(negative_prompt="ugly\x08"))
    assert error.rule == "negative_prompt"
    assert "negative prompt contains the control character U+0008 at character 5" in str(error)


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("a\u200b cat", "a cat"),
        ("a\u200bcat", "acat"),
        ("\ufeffa cat\u200d", "a cat"),
        ("a \u202ecat\u202c", "a cat"),
        ("\u2066a\u2069 \u200fcat", "a cat"),
        ("a\tcat\r\non\na mat", "a cat on a mat"),
        ("a cat --ar\u200b 16:9", "a cat"),
        ("a café 🐱 猫", "a café 🐱 猫"),
    ],
)
def test_invisible_characters_are_removed(text: str, prompt: str) -> None:
    assert build(text).prompt == prompt


@pytest.mark.parametrize(
    "text", ["", "   ", "\u200b\u200b", "\u202e\ufeff\n", "--ar 16:9 --seed 3"]
)
def test_an_empty_prompt_is_refused(text: str) -> None:
    error = refused(text)
    assert error.rule == "prompt"
    assert str(error).startswith("prompt is empty")


def test_prompt_length_is_counted_after_the_flags_are_removed() -> None:
    assert len(build("x" * 1500 + " --seed 1").prompt) == 1500
    error = refused("x" * 1501)
    assert str(error) == "prompt is 1501 characters; the limit is 1500"


@pytest.mark.parametrize(
    ("text", "options"),
    [("a cat", RequestOptions(negative_prompt="y" * 10_000)), ("a cat --no " + "y" * 10_000, NONE)],
)
def test_a_huge_negative_prompt_is_refused(text: str, options: RequestOptions) -> None:
    error = refused(text, options)
    assert error.rule == "negative_prompt"
    assert str(error) == "negative prompt is 10000 characters; the limit is 1500"


def test_the_random_seed_comes_from_the_rng() -> None:
    seeds = [build(rng=random.Random(7)).seed for _ in range(3)]
    assert seeds[0] == seeds[1] == seeds[2] == random.Random(7).randint(0, SEED_MAX)
    assert build(rng=random.Random(8)).seed != seeds[0]
    assert 0 <= build(rng=None).seed <= SEED_MAX


def test_building_twice_gives_equal_requests() -> None:
    options = RequestOptions(negative_prompt="blurry", aspect="2:3")
    assert build("a cat --no text", options) == build("a cat --no text", options)
    assert options == RequestOptions(negative_prompt="blurry", aspect="2:3")


@pytest.mark.parametrize("kind", [Kind.IMG2IMG, Kind.UPSCALE, Kind.VARIATION])
def test_image_kinds_need_an_image(kind: Kind) -> None:
    error = refused("a cat", kind=kind)
    assert error.rule == "image"
    assert error is not None and kind.value in str(error)
    assert refused("a cat", kind=kind, init_image=b"").rule == "image"


@pytest.mark.parametrize(
    ("init_size", "size"),
    [
        ((512, 512), (512, 512)),
        ((513, 767), (512, 760)),
        ((3000, 2000), (1248, 832)),
        ((4000, 4000), (1024, 1024)),
        ((40, 40), (64, 64)),
        ((40, 100), (64, 160)),
    ],
)
def test_img2img_defaults_to_the_input_size(
    init_size: tuple[int, int], size: tuple[int, int]
) -> None:
    request = build("a cat", kind=Kind.IMG2IMG, init_image=b"png", init_size=init_size)
    assert (request.width, request.height) == size
    assert request.init_image == b"png" and request.strength == 0.75
    assert fit_image_size(*init_size, LIMITS) == size


def test_img2img_size_and_strength_can_be_given() -> None:
    options = RequestOptions(aspect="16:9", strength=0.4)
    request = build("a cat", options, kind=Kind.IMG2IMG, init_image=b"png", init_size=(900, 900))
    assert (request.width, request.height, request.strength) == (704, 384, 0.4)


@pytest.mark.parametrize("init_size", [(5000, 1000), (0, 512), (100, 1000)])
def test_unusable_input_images_are_refused(init_size: tuple[int, int]) -> None:
    error = refused("a cat", kind=Kind.IMG2IMG, init_image=b"png", init_size=init_size)
    assert error.rule == "image"
    assert f"{init_size[0]}x{init_size[1]}" in str(error)


def test_a_text_job_drops_a_stray_image() -> None:
    assert build("a cat", init_image=b"png", init_size=(64, 64)).init_image is None
