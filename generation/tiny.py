"""The built-in `tiny` model: a randomly initialised Stable Diffusion pipeline.

Built from configs in a second or two with no download, seeded so every machine
gets the same weights. It draws noise, but it runs every real diffusers code path
(text-to-image, image-to-image, upscale, variation), which is what tests, CI and
the offline demo need. Scale factor 8, like the real models.
"""

from __future__ import annotations

from typing import Any

TINY_SEED = 20261126
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _byte_alphabet() -> list[str]:
    """One printable character per byte, as byte-level BPE tokenizers map them."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def byte_vocab() -> dict[str, int]:
    """A byte-level CLIP vocabulary with no merges: each byte is a token, in two forms
    (inside a word and ending one, as CLIP marks with `</w>`), plus BOS and EOS."""
    alphabet = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(alphabet)})
    vocab[BOS] = 512
    vocab[EOS] = 513
    return vocab


def build_tiny_pipeline() -> Any:
    """Build the tiny pipeline on the CPU in fp32, identically on every machine."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        unet = UNet2DConditionModel(
            sample_size=32,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=(2, 4),
            norm_num_groups=32,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 32, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=32,
            sample_size=256,
        )
        text_config = CLIPTextConfig(
            vocab_size=514,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
            projection_dim=32,
        )
        text_encoder = CLIPTextModel(text_config)
    tokenizer = CLIPTokenizer(vocab=byte_vocab(), merges=[], model_max_length=77)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )
    pipe: Any = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_safety_checker() -> tuple[Any, Any]:
    """A random-weight `StableDiffusionSafetyChecker` and the standard CLIP image processor.

    The checker has SD's architecture at toy size (a two-layer CLIP vision tower on 224x224
    inputs in 7x7 patches); the processor has the stock config that SD 1.5 ships (shortest
    edge 224, bicubic, center crop 224, CLIP mean and std). Built on the CPU in fp32 with no
    download, identically on every machine. Its concept embeddings keep diffusers' initial
    values (all ones, thresholds of one), so it flags nothing until a test aims
    `concept_embeds` (or lowers `concept_embeds_weights`) at the images it wants flagged.
    """
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        text_config={
            "vocab_size": 514,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "max_position_embeddings": 77,
            "bos_token_id": 512,
            "eos_token_id": 513,
            "pad_token_id": 513,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 224,
            "patch_size": 32,
        },
        projection_dim=32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        checker = StableDiffusionSafetyChecker(config).eval()
    return checker, CLIPImageProcessor()
