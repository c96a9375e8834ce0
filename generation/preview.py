"""Rough RGB previews straight from the latents, with no extra weights.

One linear map per model family turns the 4 latent channels into R, G, B
(factors in `generation.models`); the result is clamped to [-1, 1], scaled to
0-255 and upscaled 8x. It costs microseconds next to a UNet step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from generation.models import Family

if TYPE_CHECKING:
    import torch


def latents_to_rgb(latents: np.ndarray, family: Family) -> np.ndarray:
    """(N, 4, h, w) float latents -> (N, h, w, 3) uint8 images, before upscaling."""
    factors = np.asarray(family.latent_rgb, dtype=np.float32)  # (4, 3)
    bias = np.asarray(family.latent_bias, dtype=np.float32)
    rgb = np.einsum("nchw,cr->nhwr", latents.astype(np.float32), factors) + bias
    rgb = np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=-1.0)
    return ((np.clip(rgb, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def preview_images(latents: torch.Tensor, family: Family, max_side: int = 512) -> list[Image.Image]:
    """Preview images for a batch of latents (a torch tensor on any device)."""
    array = latents.detach().float().cpu().numpy()
    images = []
    for rgb in latents_to_rgb(array, family):
        image = Image.fromarray(rgb, mode="RGB")
        scale = family.vae_scale
        width, height = image.width * scale, image.height * scale
        shrink = max(width, height) / max_side
        if shrink > 1:
            width, height = int(width / shrink), int(height / shrink)
        images.append(image.resize((width, height), Image.Resampling.BILINEAR))
    return images
