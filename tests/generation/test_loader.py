"""Model loading: pickles refused, local diffusers folders, shared weights, image jobs,
model switching, placement and the built-in tiny model."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from generation.errors import ModelLoadError, UnsafeWeights
from generation.jobs import Job, JobResult
from generation.loader import LoadedModel, Placement, load_model
from generation.models import FAMILIES, ModelRegistry, ModelSpec, parse_model_entry
from generation.output import read_parameters
from generation.request import Kind
from generation.tiny import build_tiny_pipeline
from tests.conftest import (
    ModelCache,
    RunnerFactory,
    WorkerFactory,
    image_png,
    make_job,
    make_request,
    pixels,
)


@pytest.fixture(scope="module")
def local_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as a diffusers folder with safetensors weights."""
    path = tmp_path_factory.mktemp("models") / "tiny-copy"
    build_tiny_pipeline().save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def two_models(local_model_dir: Path) -> ModelRegistry:
    return ModelRegistry([parse_model_entry("tiny"), parse_model_entry(f"local={local_model_dir}")])


def weights_digest(pipe: Any) -> str:
    digest = hashlib.sha256()
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        for name, tensor in sorted(part.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# Unsafe weights


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt", ".pth"])
def test_pickled_checkpoints_are_refused_saying_why(suffix: str) -> None:
    with pytest.raises(UnsafeWeights) as caught:
        parse_model_entry(f"x=/tmp/model{suffix}")

    message = str(caught.value)
    assert f"({suffix})" in message
    assert "arbitrary code" in message and ".safetensors" in message


def test_load_model_refuses_a_pickle_even_when_the_spec_was_built_by_hand(cpu: Placement) -> None:
    spec = ModelSpec("x", "/tmp/model.ckpt", FAMILIES["sd15"])

    with pytest.raises(UnsafeWeights):
        load_model(spec, cpu)


def save_with_pickled_unet_and_vae(path: Path) -> None:
    """A diffusers folder as older exports wrote it: `.bin` UNet and VAE weights."""
    build_tiny_pipeline().save_pretrained(path, safe_serialization=False)


def test_a_folder_with_some_pickled_parts_never_loads_the_pickles(
    tmp_path: Path, cpu: Placement
) -> None:
    path = tmp_path / "mixed"
    save_with_pickled_unet_and_vae(path)
    assert list(path.glob("unet/*.bin")) and list(path.glob("text_encoder/*.safetensors"))

    with pytest.raises(ModelLoadError, match="safetensors"):
        load_model(parse_model_entry(f"mixed={path}"), cpu)


def test_a_folder_whose_weights_are_all_pickles_is_refused_saying_why(
    tmp_path: Path, cpu: Placement
) -> None:
    path = tmp_path / "pickled"
    save_with_pickled_unet_and_vae(path)
    for weights in path.glob("text_encoder/*.safetensors"):
        torch.save(load_file(weights), weights.with_name("pytorch_model.bin"))
        weights.unlink()
    assert not list(path.rglob("*.safetensors"))

    with pytest.raises(UnsafeWeights) as caught:
        load_model(parse_model_entry(f"old={path}"), cpu)

    assert ".bin" in str(caught.value) and "arbitrary code" in str(caught.value)


# Local folders and shared weights


def test_a_local_folder_loads_through_from_pretrained_with_shared_weights(
    local_model_dir: Path, cpu: Placement
) -> None:
    spec = parse_model_entry(f"local={local_model_dir}")

    loaded = load_model(spec, cpu)

    assert spec.source_kind == "dir" and spec.family.name == "tiny"
    assert loaded.txt2img.config._name_or_path == str(local_model_dir)
    assert loaded.img2img.unet is loaded.txt2img.unet
    assert loaded.img2img.vae is loaded.txt2img.vae
    assert loaded.img2img.text_encoder is loaded.txt2img.text_encoder
    assert weights_digest(loaded.txt2img) == weights_digest(build_tiny_pipeline())


async def test_switching_between_tiny_and_a_local_folder_gives_the_same_image(
    start_worker: WorkerFactory,
    make_runner: RunnerFactory,
    two_models: ModelRegistry,
    model_cache: ModelCache,
    caplog: pytest.LogCaptureFixture,
) -> None:
    loads: list[str] = []

    def loader(spec: ModelSpec, placement: Placement) -> LoadedModel:
        loads.append(spec.name)
        return model_cache(spec, placement)

    worker = await start_worker(make_runner(registry=two_models, loader=loader))
    caplog.set_level(logging.INFO, logger="generation.runner")

    results: list[JobResult] = []
    for n, model in enumerate(["local", "tiny"]):
        results.append(await worker.submit(make_job(f"j{n}", "alice", model=model)).result)

    assert loads == ["tiny", "local", "tiny"]
    switches = [r.getMessage() for r in caplog.records if "switching model" in r.getMessage()]
    assert switches == [
        "switching model: unloading tiny to load local",
        "switching model: unloading local to load tiny",
    ]
    local, tiny = results
    assert (local.model, tiny.model) == ("local", "tiny")
    assert (pixels(local.images[0].png) == pixels(tiny.images[0].png)).all()


# Image-to-image kinds


@pytest.mark.parametrize(
    ("kind", "size", "strength"),
    [(Kind.IMG2IMG, 64, 0.6), (Kind.UPSCALE, 128, 0.3), (Kind.VARIATION, 64, 0.75)],
)
async def test_image_jobs_run_through_the_worker_at_the_requested_size(
    start_worker: WorkerFactory, kind: Kind, size: int, strength: float
) -> None:
    worker = await start_worker()
    request = make_request(
        kind=kind, width=size, height=size, strength=strength, count=2, init_image=image_png(64, 64)
    )

    result = await worker.submit(Job("j", "alice", request)).result

    assert [(i.width, i.height) for i in result.images] == [(size, size)] * 2
    assert [pixels(i.png).shape for i in result.images] == [(size, size, 3)] * 2
    assert f"Denoising strength: {strength:g}" in (read_parameters(result.images[0].png) or "")


async def test_image_jobs_differ_with_the_input_image(start_worker: WorkerFactory) -> None:
    worker = await start_worker()
    black = image_png(1, 1)  # resized to the request's size
    jobs = [
        Job(name, "alice", make_request(kind=Kind.VARIATION, strength=0.5, init_image=png))
        for name, png in (("gradient", image_png(64, 64)), ("flat", black))
    ]

    first, second = [await worker.submit(job).result for job in jobs]

    assert int(abs(pixels(first.images[0].png) - pixels(second.images[0].png)).max()) > 10


async def test_text_jobs_are_unchanged_by_an_image_job_run_in_between(
    start_worker: WorkerFactory,
) -> None:
    """Both pipelines share one scheduler object; its state must not leak across jobs."""
    worker = await start_worker()
    image_job = make_request(kind=Kind.IMG2IMG, strength=0.5, init_image=image_png(64, 64))

    before = await worker.submit(make_job("t1", "alice", steps=3)).result
    await worker.submit(Job("i", "alice", image_job)).result
    after = await worker.submit(make_job("t2", "alice", steps=3)).result

    assert before.images[0].png == after.images[0].png


# Placement


def test_cpu_placement_is_float32_without_gpu_switches() -> None:
    placement = Placement.resolve("cpu")

    assert (placement.device, placement.dtype) == ("cpu", torch.float32)
    assert not (placement.low_vram or placement.channels_last or placement.compile)


@pytest.mark.parametrize(
    ("name", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)]
)
def test_a_dtype_override_is_honoured(name: str, dtype: torch.dtype) -> None:
    assert Placement.resolve("cpu", name).dtype == dtype


def test_the_tiny_model_loads_in_the_requested_dtype() -> None:
    loaded = load_model(parse_model_entry("tiny"), Placement.resolve("cpu", "bf16"))

    assert loaded.txt2img.unet.dtype == torch.bfloat16
    assert loaded.img2img.unet is loaded.txt2img.unet


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_it_says_so() -> None:
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        Placement.resolve("cuda")


# The built-in tiny model


def test_the_tiny_model_is_identical_on_every_build_and_leaves_the_global_rng_alone() -> None:
    rng_before = torch.random.get_rng_state()

    first, second = build_tiny_pipeline(), build_tiny_pipeline()

    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert weights_digest(first) == weights_digest(second)
    assert first.tokenizer("a red fox").input_ids == second.tokenizer("a red fox").input_ids


# A model that ships a safety checker


@pytest.fixture(scope="module")
def checked_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a (tiny) safety checker, saved as a hub model folder is."""
    from diffusers import StableDiffusionPipeline

    from generation.tiny import build_tiny_safety_checker

    checker, extractor = build_tiny_safety_checker()
    parts = build_tiny_pipeline().components
    parts.update(safety_checker=checker, feature_extractor=extractor)
    path = tmp_path_factory.mktemp("models") / "tiny-checked"
    StableDiffusionPipeline(**parts, requires_safety_checker=True).save_pretrained(
        path, safe_serialization=True
    )
    return path


@pytest.mark.parametrize(("threshold", "flagged"), [(1.0, False), (-1.0, True)])
def test_a_shipped_safety_checker_runs_beside_the_pipeline_and_flags_images(
    checked_model_dir: Path, cpu: Placement, threshold: float, flagged: bool
) -> None:
    from generation.runner import BatchRunner

    spec = parse_model_entry(f"checked={checked_model_dir}")
    model = load_model(spec, cpu)
    assert model.txt2img.safety_checker is None  # detached: flagged images are not blacked out
    assert model.safety is not None
    # Every concept's threshold: above any cosine flags nothing, below any flags everything.
    with torch.no_grad():
        model.safety_checker.concept_embeds_weights.fill_(threshold)
    runner = BatchRunner(ModelRegistry([spec]), cpu, loader=lambda *_: model)

    job = make_job("j", "u", model="checked", count=2)
    outcome = runner.run([job], lambda *_: None, lambda _: False)["j"]

    assert isinstance(outcome, JobResult)
    assert [image.nsfw for image in outcome.images] == [flagged, flagged]
    assert pixels(outcome.images[0].png).any()  # flagged or not, the pixels are kept
