"""Loading models onto a device: device and dtype choice, schedulers, safetensors only.

Text-to-image and image-to-image share one set of weights: the image-to-image
pipeline is built from the loaded one's components (`from_pipe`), never loaded twice.
Runs in the worker thread: loading takes seconds to minutes and must stay off the
event loop.
"""

from __future__ import annotations

import copy
import functools
import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from generation.compiled import CompilePlan, compile_pipeline, uncompile_pipeline, warm_up
from generation.errors import ModelLoadError, UnsafeWeights
from generation.models import PICKLE_SUFFIXES, Family, ModelSpec, refuse_pickle
from generation.request import Limits
from generation.safety import HostSafetyCheck, SafetyCheck, safety_check

log = logging.getLogger(__name__)

# The sizes compiled when SDBOT_COMPILE is on: square, portrait and landscape.
DEFAULT_COMPILE_ASPECTS = ((1, 1), (2, 3), (3, 2))

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Placement:
    """Where and how models run: device, dtype and the memory/speed switches.

    CUDA defaults follow `bench/gpu.py` on an H200 (docs/PERFORMANCE.md): bf16 and
    fused QKV projections won; channels_last lost (slower UNet steps at small
    batches), so it stays a switch; torch.compile is opt-in (its warm-up is long).
    Compilation covers the sizes of `compile_aspects` at each model's native area
    (capped by `max_pixels`, as requests are), warmed while the model loads, with
    its caches in `compile_cache` (see `generation.compiled`).
    """

    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    low_vram: bool = False
    channels_last: bool = False
    compile: bool = False
    vae_tiling: bool = False
    fused_qkv: bool = False
    compile_aspects: tuple[tuple[int, int], ...] = DEFAULT_COMPILE_ASPECTS
    max_pixels: int = Limits.max_pixels
    compile_cache: Path | None = None
    compile_backend: str = "inductor"
    max_images: int = 8  # the most images one pipeline call holds (compile warms it)

    def compile_plan(self, family: Family) -> CompilePlan:
        """The sizes to compile for a model of `family`: each aspect snapped as requests are."""
        from generation.validation import snap_aspect

        limits = Limits(max_pixels=self.max_pixels)
        sizes = dict.fromkeys(
            snap_aspect(aspect, family, limits) for aspect in self.compile_aspects
        )
        return CompilePlan(
            tuple(sizes),
            backend=self.compile_backend,
            cache_dir=self.compile_cache,
            max_images=self.max_images,
        )

    @classmethod
    def resolve(
        cls,
        device: str = "auto",
        dtype: str = "auto",
        *,
        low_vram: bool = False,
        compile: bool = False,
        channels_last: bool = False,
        compile_aspects: tuple[tuple[int, int], ...] = DEFAULT_COMPILE_ASPECTS,
        max_pixels: int = Limits.max_pixels,
        compile_cache: Path | None = None,
        max_images: int = 8,
    ) -> Placement:
        """Pick the device (CUDA, then MPS, then CPU) and its best dtype unless told.
        torch.compile is for CUDA without low-VRAM mode (offloading moves the weights
        between calls, which compiled graphs cannot follow)."""
        if device == "auto":
            if torch.cuda.is_available():
                device = "cuda"
            elif torch.backends.mps.is_available():
                device = "mps"
            else:
                device = "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError("SDBOT_DEVICE is cuda, but torch sees no CUDA device")
        if dtype == "auto":
            if device == "cuda":
                chosen = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            elif device == "mps":
                chosen = torch.float16
            else:
                chosen = torch.float32
        else:
            chosen = DTYPES[dtype]
        on_cuda = device == "cuda"
        return cls(
            device=device,
            dtype=chosen,
            low_vram=low_vram and on_cuda,
            channels_last=channels_last and on_cuda,
            compile=compile and on_cuda and not low_vram,
            vae_tiling=low_vram,
            fused_qkv=on_cuda,
            compile_aspects=compile_aspects,
            max_pixels=max_pixels,
            compile_cache=compile_cache,
            max_images=max_images,
        )


def make_scheduler(name: str, config: Any) -> Any:
    """A scheduler of the named kind, configured from the model's own scheduler config."""
    import diffusers

    table: dict[str, tuple[str, dict[str, Any]]] = {
        "euler": ("EulerDiscreteScheduler", {}),
        "euler-a": ("EulerAncestralDiscreteScheduler", {}),
        "ddim": ("DDIMScheduler", {}),
        "dpm++": ("DPMSolverMultistepScheduler", {}),
        "dpm++-karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
        "lms": ("LMSDiscreteScheduler", {}),
        "pndm": ("PNDMScheduler", {}),
        "unipc": ("UniPCMultistepScheduler", {}),
    }
    class_name, extra = table[name]
    return getattr(diffusers, class_name).from_config(config, **extra)


@dataclass
class LoadedModel:
    """A model resident on its device, with both pipelines sharing its weights."""

    spec: ModelSpec
    placement: Placement
    txt2img: Any
    img2img: Any
    safety_checker: Any = None
    feature_extractor: Any = None
    compile_s: float | None = None  # the compile warm-up at load, when compiled
    _schedulers: dict[str, Any] = field(default_factory=dict)
    _spare_tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        return self.txt2img.tokenizer

    @functools.cached_property
    def safety(self) -> SafetyCheck | HostSafetyCheck | None:
        """The safety check, on the device where it can be (None: the model has none)."""
        return safety_check(self.safety_checker, self.feature_extractor)

    @property
    def spare_tokenizer(self) -> Any:
        """A copy of the tokenizer for the event loop (prompt-length warnings).

        Never the pipeline's own: each tokenizer call resets its padding and truncation,
        so a call from another thread while the GPU thread encodes a prompt corrupts that
        encoding. Made by the loader, before the GPU thread uses the original."""
        return self._spare_tokenizer

    def scheduler(self, name: str) -> Any:
        """A fresh-state scheduler of this kind (cached: one worker thread uses them)."""
        if name not in self._schedulers:
            self._schedulers[name] = make_scheduler(name, self.txt2img.scheduler.config)
        return self._schedulers[name]


def _pipeline_class(spec: ModelSpec) -> Any:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if spec.family.xl else StableDiffusionPipeline


def _check_folder(folder: Path) -> None:
    """Refuse a diffusers folder whose weights are only pickles."""
    weights = [p for p in folder.rglob("*") if p.is_file()]
    pickles = [p for p in weights if p.suffix.lower() in PICKLE_SUFFIXES]
    safetensors = [p for p in weights if p.suffix == ".safetensors"]
    if pickles and not safetensors:
        raise UnsafeWeights(
            f"refusing to load {folder}: its weights are pickles "
            f"({', '.join(sorted({p.suffix for p in pickles}))}), which can run arbitrary "
            "code when loaded. Use a copy saved as .safetensors."
        )


def _from_source(spec: ModelSpec, dtype: torch.dtype) -> Any:
    if spec.source_kind == "tiny":
        from generation.tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline()
        return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)
    cls = _pipeline_class(spec)
    if spec.source_kind == "file":
        path = Path(spec.source).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist")
        return cls.from_single_file(str(path), torch_dtype=dtype, use_safetensors=True)
    if spec.source_kind == "dir":
        _check_folder(Path(spec.source).expanduser())
    return cls.from_pretrained(spec.source, torch_dtype=dtype, use_safetensors=True)


def load_model(spec: ModelSpec, placement: Placement) -> LoadedModel:
    """Load `spec` onto `placement.device`; raise `ModelLoadError` or `UnsafeWeights`."""
    from diffusers import AutoPipelineForImage2Image

    refuse_pickle(spec.source)
    log.info(
        "loading model %s from %s (%s) on %s %s",
        spec.name,
        spec.source,
        spec.family.label,
        placement.device,
        str(placement.dtype).removeprefix("torch."),
    )
    try:
        pipe = _from_source(spec, placement.dtype)
    except (UnsafeWeights, ModelLoadError):
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load model {spec.name} from {spec.source}: {exc}") from exc
    pipe.set_progress_bar_config(disable=True)
    checker = getattr(pipe, "safety_checker", None)
    extractor = getattr(pipe, "feature_extractor", None)
    if checker is not None:
        # Run the checker ourselves, so flagged images can be spoilered rather than blacked out.
        pipe.safety_checker = None
    _place(pipe, placement)
    if checker is not None and not placement.low_vram:
        checker.to(placement.device)
    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    img2img.set_progress_bar_config(disable=True)
    spare = copy.deepcopy(pipe.tokenizer)
    model = LoadedModel(spec, placement, pipe, img2img, checker, extractor, _spare_tokenizer=spare)
    if placement.compile:
        model.compile_s = compile_model(pipe, placement.compile_plan(spec.family))
    return model


def compile_model(pipe: Any, plan: CompilePlan) -> float | None:
    """Compile `pipe` for the plan's sizes and warm every one; the seconds it took.
    (The image-to-image pipeline shares the modules, so it is compiled too.)

    If compiling or warming fails (out of memory at the largest batch on a small card,
    a compiler error), the model runs uncompiled rather than not at all: None."""
    log.info(
        "compiling %s for %s (minutes the first time; the cache in %s makes restarts faster)",
        "the UNet and VAE" if plan.vae else "the UNet",
        ", ".join(f"{w}x{h}" for w, h in plan.sizes),
        plan.cache_dir or "the default place",
    )
    compile_pipeline(pipe, plan)
    try:
        return warm_up(pipe, plan.sizes, plan.max_images)
    except Exception as exc:
        uncompile_pipeline(pipe)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning(
            "compiling failed (%s: %s); the model runs uncompiled. SDBOT_MAX_BATCH or "
            "SDBOT_COMPILE_ASPECTS can make the warm-up smaller.",
            type(exc).__name__,
            str(exc).splitlines()[0][:200] if str(exc) else "",
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
        return None


def _place(pipe: Any, placement: Placement) -> None:
    if placement.fused_qkv:
        pipe.fuse_qkv_projections()
    if placement.low_vram:
        pipe.enable_model_cpu_offload()
    else:
        pipe.to(placement.device)
    if placement.vae_tiling:
        pipe.vae.enable_tiling()
        pipe.vae.enable_slicing()
    if placement.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
