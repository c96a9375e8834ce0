"""Architecture-identical random-weight pipelines for the GPU benchmark.

A UNet's compute cost does not depend on its weight values, so a pipeline built
from the published configs with PyTorch's default initialisation runs at the
real model's speed, with no download. Modules are constructed directly on the
target device (one `torch.device` context) and then cast, so even SDXL builds in
seconds on a GPU. The configs below follow the `config.json` files of
`stable-diffusion-v1-5` and `stable-diffusion-xl-base-1.0`; every field not set
here is the diffusers / transformers default, which matches those files.

The tokenizers are byte-level and built in memory (see `generation.tiny`): the
text encoders only need 77 token ids inside their vocabulary, not real words.

`PROFILES` holds what the benchmark runs of each model (sizes, steps) and the FLOP
counts of DESIGN.md that turn its timings into TFLOP/s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from generation.tiny import byte_vocab

BUILD_SEED = 1234
PEAK_TFLOPS = 790.0  # DESIGN.md: an H100 / H200 in dense bf16 matrix work


# -- what is benchmarked, and its FLOPs ------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """One benchmarked model: its sizes and steps, and DESIGN.md's FLOP counts."""

    key: str
    family: str
    buckets: tuple[tuple[int, int], ...]  # (width, height): two aspect ratios
    steps: int
    guidance: float
    flop_side: int  # the FLOP counts are for a square image of this side
    unet_tflop: float | None  # one UNet forward, one image (no CFG)
    vae_tflop: float | None  # one VAE decode, one image

    @property
    def label(self) -> str:
        return f"{self.key}@{self.buckets[0][0]}"


PROFILES = {
    "sd15": Profile("sd15", "sd15", ((512, 512), (576, 448)), 25, 7.5, 512, 0.80, 2.5),
    "sdxl": Profile("sdxl", "sdxl", ((1024, 1024), (1152, 896)), 25, 7.5, 1024, 6.76, 10.5),
    "tiny": Profile("tiny", "tiny", ((128, 128), (128, 64)), 2, 7.5, 128, None, None),
}
# On the CPU the real architectures run at toy sizes, one step: it proves the code path.
CPU_SHRINK = {"sd15": ((64, 64), (64, 128)), "sdxl": ((128, 128), (128, 192))}


def profile_for(key: str, cuda: bool) -> Profile:
    profile = PROFILES[key]
    if cuda or key not in CPU_SHRINK:
        return profile
    return replace(profile, buckets=CPU_SHRINK[key], steps=1)


def image_tflop(
    profile: Profile, width: int, height: int, steps: int, guidance: float
) -> float | None:
    """TFLOP to make one image: `steps` UNet forwards (two images' worth with CFG, as
    diffusers runs it when guidance > 1) plus one VAE decode, scaled by pixel area."""
    if profile.unet_tflop is None or profile.vae_tflop is None:
        return None
    area = width * height / profile.flop_side**2
    passes = 2 if guidance > 1 else 1
    return (steps * passes * profile.unet_tflop + profile.vae_tflop) * area


def floor_ms(tflop: float, peak_tflops: float = PEAK_TFLOPS) -> float:
    """The FLOP floor: milliseconds `tflop` takes at the card's peak matrix rate."""
    return tflop / peak_tflops * 1000


# -- configs -------------------------------------------------------------------------

# SD 1.5: UNet2DConditionModel defaults are the SD 1.x UNet except for these two.
SD15_UNET: dict[str, Any] = {"sample_size": 64, "cross_attention_dim": 768}

SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,  # 6 time ids x 256 + 1280 pooled text
    "use_linear_projection": True,
}


def sd_vae_config(sample_size: int, scaling_factor: float) -> dict[str, Any]:
    """The SD / SDXL VAE (same architecture; SDXL differs in scaling factor and size)."""
    return {
        "block_out_channels": (128, 256, 512, 512),
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "layers_per_block": 2,
        "latent_channels": 4,
        "sample_size": sample_size,
        "scaling_factor": scaling_factor,
        # SDXL's real VAE overflows in fp16, so its pipeline upcasts it to fp32 then.
        "force_upcast": True,
    }


_TOKEN_IDS: dict[str, int] = {"bos_token_id": 512, "eos_token_id": 513, "pad_token_id": 513}

CLIP_L: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    **_TOKEN_IDS,
}

OPENCLIP_BIGG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
    **_TOKEN_IDS,
}


@contextlib.contextmanager
def _seeded_on(device: str) -> Iterator[None]:
    """Create modules directly on `device`, with reproducible weights."""
    torch.manual_seed(BUILD_SEED)
    with torch.device(device):
        yield


def byte_tokenizer() -> Any:
    """A byte-level CLIP tokenizer padding to 77 tokens, built in memory."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=byte_vocab(), merges=[], model_max_length=77)


def sd_scheduler(*, leading: bool = False) -> Any:
    """Euler with the SD noise schedule (diffusers' default for SDXL; any one-step-per-
    UNet-call scheduler costs the same)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading" if leading else "linspace",
    )


def build_sd15(device: str, dtype: torch.dtype) -> Any:
    """A random-weight Stable Diffusion 1.5 pipeline on `device` in `dtype`."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with _seeded_on(device):
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**sd_vae_config(512, 0.18215))
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L))
    pipe: Any = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=byte_tokenizer(),
        scheduler=sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _finish(pipe, device, dtype)


def build_sdxl(device: str, dtype: torch.dtype) -> Any:
    """A random-weight SDXL base pipeline on `device` in `dtype`."""
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with _seeded_on(device):
        unet = UNet2DConditionModel(**SDXL_UNET)
        vae = AutoencoderKL(**sd_vae_config(1024, 0.13025))
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**OPENCLIP_BIGG))
    pipe: Any = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=byte_tokenizer(),
        tokenizer_2=byte_tokenizer(),
        unet=unet,
        scheduler=sd_scheduler(leading=True),
        add_watermarker=False,
    )
    return _finish(pipe, device, dtype)


def build_tiny(device: str, dtype: torch.dtype) -> Any:
    """sdbot's own built-in tiny model (CPU smoke runs of the benchmark)."""
    from generation.tiny import build_tiny_pipeline

    return _finish(build_tiny_pipeline(), device, dtype)


def build_pipeline(model: str, device: str, dtype: torch.dtype) -> Any:
    """A random-weight pipeline of `model` ("tiny", "sd15" or "sdxl") on `device`."""
    builders = {"tiny": build_tiny, "sd15": build_sd15, "sdxl": build_sdxl}
    if model not in builders:
        raise ValueError(f"model must be one of {', '.join(builders)}, got {model!r}")
    return builders[model](device, dtype)


def build_vae(model: str, device: str, dtype: torch.dtype) -> Any:
    """The VAE of `model` alone (the decode micro-benchmark)."""
    from diffusers import AutoencoderKL

    if model == "tiny":
        return build_tiny(device, dtype).vae
    size, scaling = (1024, 0.13025) if model == "sdxl" else (512, 0.18215)
    with _seeded_on(device):
        vae: Any = AutoencoderKL(**sd_vae_config(size, scaling))
    return vae.to(dtype=dtype)


def _finish(pipe: Any, device: str, dtype: torch.dtype) -> Any:
    pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# SD 1.5's safety checker: a CLIP ViT-L/14 vision tower and projection (the text tower of
# its CLIPConfig is never built by the checker).
SAFETY_VISION = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 224,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}


def build_safety_checker(model: str, device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """A random-weight safety checker and the standard CLIP image processor, as SD 1.5
    ships them ("tiny": sdbot's own toy checker for CPU runs)."""
    if model == "tiny":
        from generation.tiny import build_tiny_safety_checker

        checker, extractor = build_tiny_safety_checker()
        return checker.to(device=device, dtype=dtype), extractor
    from diffusers.pipelines.stable_diffusion.safety_checker import (
        StableDiffusionSafetyChecker,
    )
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(vision_config=SAFETY_VISION, projection_dim=768)
    with _seeded_on(device):
        checker = StableDiffusionSafetyChecker(config)
    return checker.to(dtype=dtype).eval(), CLIPImageProcessor()
