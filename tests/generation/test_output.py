"""Output images: the A1111 `parameters` chunk, grids, and fitting under an upload limit."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from generation.jobs import JobResult
from generation.output import encode_png, fit_under, make_grid, parameters_text, read_parameters
from generation.request import Kind
from tests.conftest import RunnerFactory, make_job, make_request

A1111_FIELDS = "Steps: 2, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 64x64, Model: tiny"


def png_text(png: bytes) -> str | None:
    """The `parameters` chunk as PIL reads it, the way PNG Info tools do."""
    with Image.open(io.BytesIO(png)) as image:
        value = image.info.get("parameters")
    return value if isinstance(value, str) else None


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB")


def test_generated_images_carry_parameters_in_the_a1111_layout(
    make_runner: RunnerFactory,
) -> None:
    runner = make_runner()
    job = make_job(
        "j", "alice", prompt="a red fox in the snow", negative_prompt="blurry", seed=42, count=2
    )

    outcome = runner.run([job], lambda _id, _progress: None, lambda _id: False)["j"]

    assert isinstance(outcome, JobResult)
    first, second = (png_text(image.png) for image in outcome.images)
    assert first == (
        f"a red fox in the snow\nNegative prompt: blurry\n{A1111_FIELDS}, Version: sdbot"
    )
    assert second is not None and "Seed: 43," in second


def test_parameters_without_a_negative_prompt_have_two_lines() -> None:
    text = parameters_text(make_request(negative_prompt=""), 42, "tiny")

    assert text.splitlines() == ["a red fox in the snow", f"{A1111_FIELDS}, Version: sdbot"]


def test_image_jobs_record_the_denoising_strength_and_sampler_label() -> None:
    request = make_request(kind=Kind.VARIATION, strength=0.65, scheduler="euler-a")

    fields = parameters_text(request, 7, "tiny").splitlines()[-1]

    assert "Sampler: Euler a," in fields
    assert "Denoising strength: 0.65," in fields


def test_read_parameters_round_trips_and_is_none_without_the_chunk() -> None:
    image = noise(8, 8)
    text = "a prompt, with commas\nNegative prompt: ü\nSteps: 2"

    assert read_parameters(encode_png(image, text)) == text
    assert read_parameters(encode_png(image)) is None


@pytest.mark.parametrize(
    ("count", "size", "last_at"),
    [
        (1, (64, 64), (0, 0)),
        (2, (132, 64), (68, 0)),
        (3, (132, 132), (0, 68)),
        (4, (132, 132), (68, 68)),
    ],
)
def test_grids_are_near_square_with_a_small_gap(
    count: int, size: tuple[int, int], last_at: tuple[int, int]
) -> None:
    images = [noise(64, 64, seed) for seed in range(count)]

    grid = make_grid(images)

    assert grid.size == size
    assert grid.getpixel((0, 0)) == images[0].getpixel((0, 0))
    assert grid.getpixel(last_at) == images[-1].getpixel((0, 0))


def test_a_grid_needs_at_least_one_image() -> None:
    with pytest.raises(ValueError, match="at least one"):
        make_grid([])


def test_fit_under_keeps_a_png_that_fits() -> None:
    image = noise(32, 32)
    png = encode_png(image)

    assert fit_under(png, image, len(png)) is png


def test_fit_under_shrinks_to_a_jpeg_under_the_limit() -> None:
    image = noise(512, 512)
    png = encode_png(image)
    limit = 60_000
    assert len(png) > limit

    fitted = fit_under(png, image, limit)

    assert len(fitted) <= limit
    with Image.open(io.BytesIO(fitted)) as shrunk:
        assert shrunk.format == "JPEG"
        assert shrunk.width < 512 and shrunk.width == shrunk.height


def test_fit_under_says_when_nothing_fits() -> None:
    image = noise(64, 64)

    with pytest.raises(ValueError, match="under 10 bytes"):
        fit_under(encode_png(image), image, 10)
