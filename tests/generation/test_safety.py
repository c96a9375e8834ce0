"""SafetyCheck against the CPU path it replaces: the same checker input, the same flags.

The reference is what the runner did on the CPU: PIL images through the feature
extractor, then the checker's own forward. Everything is built offline from the tiny
random-weight checker; the flags are steered by aiming its concept embeddings at
chosen images.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import CLIPImageProcessor

from generation.safety import ClipPreprocess, HostSafetyCheck, SafetyCheck, safety_check
from generation.tiny import build_tiny_safety_checker

# The extractor resizes with PIL (or torchvision on uint8), in two passes that each round
# to 8 bits with fixed-point weights; float weights put a pixel on the other side of a
# rounding boundary now and then: at most one level per pass, so two in all. Elsewhere,
# and everywhere when no resize is needed, only float32 arithmetic differs.
RESIZE_LEVELS = 2.0
FLOAT_LEVELS = 1e-3


def make_pixels(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(count, H, W, 3) uint8 images unlike each other: a coarse random colour grid
    scaled up, with fine noise on top (hard edges and texture both reach the resize)."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (count, 8, 8, 3)).astype(np.float64)
    rows = np.arange(height) * 8 // height
    cols = np.arange(width) * 8 // width
    coarse = grid[:, rows][:, :, cols]
    noise = rng.normal(0, 24, (count, height, width, 3))
    return np.clip(coarse + noise, 0, 255).round().astype(np.uint8)


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """The pipeline's output for these pixels: (N, 3, H, W) floats in [0, 1]."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255


def processor_input(extractor: Any, pixels: np.ndarray) -> torch.Tensor:
    result: torch.Tensor = extractor(
        [Image.fromarray(p) for p in pixels], return_tensors="pt"
    ).pixel_values
    return result


def cpu_path_flags(checker: Any, extractor: Any, pixels: np.ndarray) -> tuple[bool, ...]:
    """The runner's CPU check, step for step: PIL through the extractor, checker.forward."""
    arrays = pixels.astype(np.float32) / 255.0
    clip_input = processor_input(extractor, pixels)
    with torch.inference_mode():
        _, flags = checker(images=arrays.copy(), clip_input=clip_input.to(dtype=checker.dtype))
    return tuple(bool(flag) for flag in flags)


def levels(a: torch.Tensor, b: torch.Tensor, extractor: Any) -> torch.Tensor:
    """|a - b| of two normalized inputs, in 8-bit levels of the original pixels."""
    std = torch.tensor(extractor.image_std if extractor.do_normalize else [1.0] * 3)
    std = std.view(1, 3, 1, 1)
    rescale = extractor.rescale_factor if extractor.do_rescale else 1.0
    return (a - b).abs() * std / rescale


@pytest.fixture
def tiny() -> Iterator[tuple[Any, Any]]:
    yield build_tiny_safety_checker()


@pytest.mark.parametrize(
    ("height", "width"),
    [(512, 512), (512, 768), (768, 512), (128, 192), (224, 224), (224, 320)],
)
def test_device_input_matches_the_extractor(tiny: tuple[Any, Any], height: int, width: int) -> None:
    checker, extractor = tiny
    pixels = make_pixels(2, height, width)
    reference = processor_input(extractor, pixels)

    got = SafetyCheck.build(checker, extractor)
    assert got is not None
    clip_input = got.clip_input(as_tensor(pixels))

    assert clip_input.shape == reference.shape == (2, 3, 224, 224)
    assert clip_input.dtype == torch.float32
    diff = levels(clip_input, reference, extractor)
    resized = min(height, width) != 224
    assert diff.max() <= (RESIZE_LEVELS if resized else 0) + FLOAT_LEVELS
    assert diff.mean() <= (0.05 if resized else FLOAT_LEVELS)


@pytest.mark.parametrize(
    "config",
    [
        {"size": {"shortest_edge": 256}, "crop_size": {"height": 240, "width": 200}},
        {"size": {"height": 300, "width": 200}, "do_center_crop": False},
        {"do_resize": False, "crop_size": {"height": 300, "width": 300}},
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.25, 0.125], "resample": 2},
        {"do_normalize": False, "do_rescale": False},
    ],
    ids=["other-sizes", "exact-resize", "pad-crop", "mean-std-bilinear", "raw"],
)
def test_device_input_follows_the_extractor_config(config: dict[str, Any]) -> None:
    extractor = CLIPImageProcessor(**config)
    pixels = make_pixels(2, 256, 384, seed=1)
    reference = processor_input(extractor, pixels)

    clip_input = ClipPreprocess.from_processor(extractor)(as_tensor(pixels))

    assert clip_input.shape == reference.shape
    assert levels(clip_input, reference, extractor).max() <= RESIZE_LEVELS + FLOAT_LEVELS


def test_unsupported_resample_is_refused() -> None:
    with pytest.raises(ValueError, match="resample"):
        ClipPreprocess.from_processor(CLIPImageProcessor(resample=1))  # LANCZOS


def aim(checker: Any, extractor: Any, pixels: np.ndarray) -> None:
    """Steer the checker for four images: 0 is flagged on a concept outright; 1 and 2 sit
    0.005 under a concept's threshold, and only 1 has a "special care" concept, whose
    0.01 adjustment tips it over; 3 stays far under. Every other concept never fires."""
    with torch.inference_mode():
        embeds = checker.visual_projection(
            checker.vision_model(processor_input(extractor, pixels))[1]
        )
    rows = torch.nn.functional.normalize(embeds.double())
    pinv = torch.linalg.pinv(rows)

    def direction(targets: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """A unit vector whose cosines with the images are proportional to targets."""
        vector = pinv @ torch.tensor(targets, dtype=torch.float64)
        return vector / vector.norm(), rows @ (vector / vector.norm())

    concept, concept_cos = direction([2.0, 1.0, 1.0, 0.0])
    special, special_cos = direction([0.0, 1.0, 0.0, 0.0])
    assert concept_cos[1] > 0.02, "images too alike to steer"
    assert special_cos[1] > 0.02, "images too alike to steer"
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(2.0)
        checker.special_care_embeds_weights.fill_(2.0)
        checker.concept_embeds[0] = concept.float()
        checker.concept_embeds_weights[0] = float(concept_cos[1]) + 0.005
        checker.special_care_embeds[0] = special.float()
        checker.special_care_embeds_weights[0] = float(special_cos[1]) / 2


@pytest.mark.parametrize(("height", "width"), [(256, 256), (256, 384)])
def test_flags_match_the_cpu_path(tiny: tuple[Any, Any], height: int, width: int) -> None:
    checker, extractor = tiny
    pixels = make_pixels(4, height, width, seed=2)
    aim(checker, extractor, pixels)

    got = SafetyCheck.build(checker, extractor)
    assert got is not None
    flags = got.flags(as_tensor(pixels))

    assert flags == cpu_path_flags(checker, extractor, pixels)
    assert flags == (True, True, False, False)


def test_a_checker_that_flags_nothing_flags_nothing(tiny: tuple[Any, Any]) -> None:
    checker, extractor = tiny
    pixels = make_pixels(3, 256, 256, seed=3)
    got = SafetyCheck.build(checker, extractor)
    assert got is not None

    assert got.flags(as_tensor(pixels)) == cpu_path_flags(checker, extractor, pixels)
    assert got.flags(as_tensor(pixels)) == (False, False, False)
    assert got.flags(as_tensor(pixels)[:0]) == ()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images_give_the_same_flags(
    tiny: tuple[Any, Any], dtype: torch.dtype
) -> None:
    checker, extractor = tiny
    pixels = make_pixels(4, 256, 256, seed=2)
    aim(checker, extractor, pixels)
    got = SafetyCheck.build(checker, extractor)
    assert got is not None

    assert got.flags(as_tensor(pixels).to(dtype)) == (True, True, False, False)


def test_the_callers_images_are_left_alone(tiny: tuple[Any, Any]) -> None:
    checker, extractor = tiny
    pixels = make_pixels(4, 256, 256, seed=2)
    aim(checker, extractor, pixels)
    images = as_tensor(pixels)
    before = images.clone()
    got = SafetyCheck.build(checker, extractor)
    assert got is not None

    assert any(got.flags(images))  # forward would black these out in place
    assert torch.equal(images, before)


class SubclassedChecker(torch.nn.Module):
    """Stands in for a checker with its own forward: SafetyCheck must call it."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, clip_input: torch.Tensor, images: Any) -> tuple[Any, list[bool]]:
        self.calls += 1
        result: tuple[Any, list[bool]] = self.inner(clip_input=clip_input, images=images)
        return result


def test_a_checker_with_its_own_forward_is_called(tiny: tuple[Any, Any]) -> None:
    checker, extractor = tiny
    pixels = make_pixels(4, 256, 256, seed=2)
    aim(checker, extractor, pixels)
    wrapper = SubclassedChecker(checker)
    images = as_tensor(pixels)
    before = images.clone()
    got = SafetyCheck.build(wrapper, extractor)
    assert got is not None

    assert got.flags(images) == (True, True, False, False)
    assert wrapper.calls == 1
    assert torch.equal(images, before)


class OpLog(TorchDispatchMode):
    """Records every aten op that runs."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


# Ops that read a device value back to the host (and on a GPU wait for it).
HOST_READS = ("aten.item", "aten._local_scalar_dense", "aten.nonzero", "aten.is_nonzero")


def test_flags_read_nothing_back_but_the_result(tiny: tuple[Any, Any]) -> None:
    checker, extractor = tiny
    pixels = make_pixels(2, 256, 256, seed=2)
    got = SafetyCheck.build(checker, extractor)
    assert got is not None

    with OpLog() as log:
        got.flags(as_tensor(pixels))
    with OpLog() as control:
        bool(torch.ones(2).sum() > 1)  # a read-back the log must see

    assert [op for op in log.ops if op.startswith(HOST_READS)] == []
    assert [op for op in control.ops if op.startswith(HOST_READS)] != []


def test_no_checker_means_no_check() -> None:
    extractor = CLIPImageProcessor()
    assert SafetyCheck.build(None, extractor) is None
    assert SafetyCheck.build(object(), None) is None
    assert SafetyCheck.build(None, None) is None


def test_an_extractor_it_cannot_reproduce_falls_back_to_the_host_path(
    tiny: tuple[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    checker, _ = tiny
    lanczos = CLIPImageProcessor(resample=1)
    pixels = make_pixels(4, 256, 256, seed=3)
    aim(checker, lanczos, pixels)

    check = safety_check(checker, lanczos)

    assert isinstance(check, HostSafetyCheck)
    assert "runs on the CPU" in caplog.text and "resample" in caplog.text
    assert check.flags(as_tensor(pixels)) == cpu_path_flags(checker, lanczos, pixels)
    assert check.flags(as_tensor(pixels)) == (True, True, False, False)
    assert safety_check(None, lanczos) is None
