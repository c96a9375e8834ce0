"""The NSFW check, run on the device from the pipeline's output tensor.

Models that ship a safety checker (diffusers `StableDiffusionSafetyChecker` with a
transformers `CLIPImageProcessor` as its feature extractor, as SD 1.5 does) used to be
checked on the CPU: PIL images, the processor's PIL resize, a float copy of every image.
`SafetyCheck` does the same work where the images already are: it reproduces the
processor's steps with tensor ops read from the processor's own config, runs the
checker's CLIP vision tower, and makes the checker's decision on the device. The only
host round trip is the final copy of one boolean per image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# PIL resampling filters (`PIL.Image.Resampling` values, or torchvision's mode names) that
# torch reproduces: with antialias=True its bilinear and bicubic use PIL's kernels.
_TORCH_MODES: dict[int | str, str] = {
    2: "bilinear",
    3: "bicubic",
    "bilinear": "bilinear",
    "bicubic": "bicubic",
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipPreprocess:
    """A `CLIPImageProcessor`'s steps as tensor ops, with the values from its config.

    The processor works on 8-bit images: PIL (and torch's uint8 resize, which torchvision
    uses) resizes in two passes, width then height, and rounds and clips to 0..255 after
    each. The same is done here in float32. PIL's fixed-point weights put a pixel on the
    other side of a rounding boundary now and then, so a small fraction of pixels differ
    by one 8-bit level per pass (two at most); the rest match.
    """

    shortest_edge: int | None
    """Resize so the shorter side is this long (the longer keeps the aspect ratio)."""
    resize_to: tuple[int, int] | None
    """Or resize to exactly (height, width)."""
    mode: str
    crop: tuple[int, int] | None
    """Center crop (height, width), zero-padded if the image is smaller."""
    scale: tuple[float, float, float]
    """Per channel, applied to 0..255 values: rescale factor over std."""
    shift: tuple[float, float, float]
    """Per channel: minus mean over std."""

    @classmethod
    def from_processor(cls, extractor: Any) -> ClipPreprocess:
        """Read the steps from a CLIP image processor (transformers 4 or 5, PIL or
        torchvision backend). Raises ValueError on settings it cannot reproduce."""
        if getattr(extractor, "do_pad", False):
            raise ValueError("the safety feature extractor pads images, which is not supported")
        shortest_edge = resize_to = None
        if getattr(extractor, "do_resize", False):
            size = extractor.size
            if _field(size, "shortest_edge") and not _field(size, "longest_edge"):
                shortest_edge = int(_field(size, "shortest_edge"))
            elif _field(size, "height") and _field(size, "width"):
                resize_to = (int(_field(size, "height")), int(_field(size, "width")))
            else:
                raise ValueError(f"unsupported resize size for the safety check: {size}")
        resample = getattr(extractor, "resample", None)
        resample = getattr(resample, "value", resample)
        mode = "bilinear" if resample is None else _TORCH_MODES.get(resample)
        if mode is None:
            raise ValueError(f"unsupported resample filter for the safety check: {resample}")
        crop = None
        if getattr(extractor, "do_center_crop", False):
            size = extractor.crop_size
            crop = (int(_field(size, "height")), int(_field(size, "width")))
        factor = float(extractor.rescale_factor) if getattr(extractor, "do_rescale", False) else 1.0
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if getattr(extractor, "do_normalize", False):
            mean, std = _per_channel(extractor.image_mean), _per_channel(extractor.image_std)
        return cls(
            shortest_edge=shortest_edge,
            resize_to=resize_to,
            mode=mode,
            crop=crop,
            scale=(factor / std[0], factor / std[1], factor / std[2]),
            shift=(-mean[0] / std[0], -mean[1] / std[1], -mean[2] / std[2]),
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) floats in [0, 1] -> the processor's `pixel_values`, float32, on
        the same device. Never writes to `images`."""
        # What the CPU path hands PIL: the pipeline's output as 8-bit values.
        pixels = _to_8bit(images.float() * 255)
        height, width = pixels.shape[-2:]
        target = self._resized_size(height, width)
        if target[1] != width:
            pixels = _to_8bit(self._resize(pixels, (height, target[1])))
        if target[0] != height:
            pixels = _to_8bit(self._resize(pixels, target))
        if self.crop is not None:
            pixels = _center_crop(pixels, self.crop)
        channels = [pixels[:, c] * self.scale[c] + self.shift[c] for c in range(3)]
        return torch.stack(channels, dim=1)

    def _resized_size(self, height: int, width: int) -> tuple[int, int]:
        if self.resize_to is not None:
            return self.resize_to
        if self.shortest_edge is None:
            return height, width
        # As transformers' get_resize_output_image_size computes it.
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.shortest_edge * long / short)
        if width <= height:
            return new_long, self.shortest_edge
        return self.shortest_edge, new_long

    def _resize(self, pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(pixels, size=size, mode=self.mode, antialias=True, align_corners=False)


class SafetyCheck:
    """Flags NSFW images with a model's safety checker, on the checker's device."""

    def __init__(self, checker: Any, preprocess: ClipPreprocess) -> None:
        from diffusers.pipelines.stable_diffusion.safety_checker import (
            StableDiffusionSafetyChecker,
            cosine_distance,
        )

        self._checker = checker
        self._preprocess = preprocess
        self._cosine_distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = (
            cosine_distance
        )
        # A subclass with its own forward may decide differently: it is called as it is.
        self._stock = (
            isinstance(checker, StableDiffusionSafetyChecker)
            and type(checker).forward is StableDiffusionSafetyChecker.forward
        )

    @classmethod
    def build(cls, checker: Any, extractor: Any) -> SafetyCheck | None:
        """The check for a model's detached safety checker and feature extractor; None
        when the model has no checker (either is None)."""
        if checker is None or extractor is None:
            return None
        return cls(checker, ClipPreprocess.from_processor(extractor))

    def clip_input(self, images: torch.Tensor) -> torch.Tensor:
        """The checker's input for `images`, as the feature extractor would make it."""
        with torch.inference_mode():
            return self._preprocess(images)

    def flags(self, images: torch.Tensor) -> tuple[bool, ...]:
        """One bool per image, True where the checker flags it NSFW.

        `images` is (N, 3, H, W), any float dtype, values in [0, 1], on the checker's
        device; it is not modified. Blocks only on the copy of the N booleans to the host.
        """
        if images.shape[0] == 0:
            return ()
        with torch.inference_mode():
            weight = next(self._checker.parameters())
            clip_input = self._preprocess(images).to(device=weight.device, dtype=weight.dtype)
            flagged = self._stock_flags(clip_input) if self._stock else self._call(clip_input)
            return tuple(bool(f) for f in flagged.cpu().tolist())

    def _stock_flags(self, clip_input: torch.Tensor) -> torch.Tensor:
        """`StableDiffusionSafetyChecker.forward`'s decision, made on the device.

        forward copies the cosine distances to the host and loops over images and concepts
        in Python, reading each threshold with `.item()`: two syncs, plus one per concept
        and image. Its rule, kept exactly here: a concept counts when
        `round(cos - threshold + adjustment, 3) > 0` in float32, where adjustment is 0.01
        for an image with any "special care" concept and 0 otherwise; an image is flagged
        when any concept counts.
        """
        checker = self._checker
        embeds = checker.visual_projection(checker.vision_model(clip_input)[1])
        special = _rounded_scores(
            self._cosine_distance(embeds, checker.special_care_embeds),
            checker.special_care_embeds_weights,
        )
        adjustment = (special > 0).any(dim=1, keepdim=True).float() * 0.01
        concepts = _rounded_scores(
            self._cosine_distance(embeds, checker.concept_embeds),
            checker.concept_embeds_weights,
            adjustment,
        )
        return (concepts > 0).any(dim=1)

    def _call(self, clip_input: torch.Tensor) -> torch.Tensor:
        """Any other checker: call it. It blacks out flagged `images` in place, so it gets
        a throwaway 1x1 black image per input."""
        placeholder = np.zeros((clip_input.shape[0], 1, 1, 3), dtype=np.float32)
        _, flagged = self._checker(clip_input=clip_input, images=placeholder)
        if isinstance(flagged, torch.Tensor):
            return flagged.bool()
        return torch.tensor([bool(f) for f in flagged])


def _rounded_scores(
    cos: torch.Tensor, thresholds: torch.Tensor, adjustment: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """forward's `round(cos - threshold + adjustment, 3)`, times 1000: the same float32
    operations NumPy does (it rounds by multiplying by 1000 and rounding half to even)."""
    return torch.round((cos.float() - thresholds.float() + adjustment) * 1000)


def _to_8bit(values: torch.Tensor) -> torch.Tensor:
    return values.round().clamp(0, 255)


def _center_crop(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Center crop as transformers' `center_crop` does it, padding with black (more on
    the top and left when the padding is odd) where the image is smaller than the crop."""
    height, width = pixels.shape[-2:]
    crop_height, crop_width = size
    pad_top = math.ceil(max(crop_height - height, 0) / 2)
    pad_left = math.ceil(max(crop_width - width, 0) / 2)
    if pad_top or pad_left:
        pad_bottom = max(crop_height - height, 0) - pad_top
        pad_right = max(crop_width - width, 0) - pad_left
        pixels = F.pad(pixels, (pad_left, pad_right, pad_top, pad_bottom))
        height, width = pixels.shape[-2:]
    top = (height - crop_height) // 2
    left = (width - crop_width) // 2
    return pixels[..., top : top + crop_height, left : left + crop_width]


def _field(size: Any, key: str) -> Any:
    """A size setting: transformers 5 keeps a SizeDict, transformers 4 a plain dict."""
    if isinstance(size, Mapping):
        return size.get(key)
    return getattr(size, key, None)


def _per_channel(value: float | Sequence[float]) -> tuple[float, float, float]:
    if isinstance(value, int | float):
        return (float(value),) * 3
    first, second, third = (float(v) for v in value)
    return first, second, third


class HostSafetyCheck:
    """The fallback for a feature extractor `SafetyCheck` cannot reproduce (padding, a
    Lanczos resample): the extractor itself on PIL images, then the checker as it is.
    Slower (CPU work on the GPU thread), but the model keeps working."""

    def __init__(self, checker: Any, extractor: Any) -> None:
        self._checker = checker
        self._extractor = extractor

    def flags(self, images: torch.Tensor) -> tuple[bool, ...]:
        from PIL import Image

        if images.shape[0] == 0:
            return ()
        with torch.inference_mode():
            pixels = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
            arrays = pixels.permute(0, 2, 3, 1).cpu().numpy()
            clip_input = self._extractor(
                [Image.fromarray(a) for a in arrays], return_tensors="pt"
            ).pixel_values
            weight = next(self._checker.parameters())
            _, flagged = self._checker(
                images=arrays.astype(np.float32) / 255.0,
                clip_input=clip_input.to(device=weight.device, dtype=weight.dtype),
            )
        return tuple(bool(flag) for flag in flagged)


def safety_check(checker: Any, extractor: Any) -> SafetyCheck | HostSafetyCheck | None:
    """The on-device check where the extractor's steps can be reproduced, else the host
    fallback; None when the model ships no checker."""
    try:
        return SafetyCheck.build(checker, extractor)
    except ValueError as exc:
        log.warning("the safety check runs on the CPU for this model: %s", exc)
        return HostSafetyCheck(checker, extractor)
