"""torch.compile on resolution buckets: the sizes chosen, no recompiles once warm, the
eager path for every other call, the same pixels as uncompiled, and the cache folder.

These run dynamo for real on the CPU, with the "eager" backend: dynamo traces,
guards and caches graphs exactly as with inductor (which the GPU uses), but
skips code generation, which takes minutes on two CPU cores. What inductor's
kernels cost and gain is measured by `bench/gpu.py` on a GPU.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from generation.compiled import BucketedForward, CompilePlan, compiled_forwards, use_cache_dir
from generation.jobs import Job, JobResult
from generation.loader import LoadedModel, Placement, load_model
from generation.models import FAMILIES, ModelRegistry, ModelSpec, parse_model_entry
from generation.request import Kind
from tests.conftest import (
    ModelCache,
    RunnerFactory,
    WorkerFactory,
    image_png,
    make_request,
    pixels,
)

MAX_PIXELS = 192 * 128  # keeps the tiny model's buckets small: 128x128 and 192x128


def compiled_placement(**changes: object) -> Placement:
    fields: dict[str, object] = {
        "compile": True,
        "compile_backend": "eager",
        "compile_aspects": ((1, 1), (3, 2)),
        "max_pixels": MAX_PIXELS,
        **changes,
    }
    return Placement(**fields)  # type: ignore[arg-type]


def graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


@pytest.fixture(scope="module")
def compiled() -> Iterator[tuple[LoadedModel, int]]:
    """The tiny model compiled and warmed, with the graphs its warm-up compiled."""
    torch._dynamo.reset()
    counters.clear()
    model = load_model(parse_model_entry("tiny"), compiled_placement())
    yield model, graphs()
    torch._dynamo.reset()


def test_the_buckets_are_the_aspects_snapped_as_requests_are() -> None:
    plan = Placement(compile_aspects=((1, 1), (2, 3), (3, 2), (1, 1))).compile_plan(
        FAMILIES["sd15"]
    )
    assert plan.sizes == ((512, 512), (448, 640), (640, 448))  # duplicates dropped

    capped = Placement(compile_aspects=((1, 1),), max_pixels=256 * 256).compile_plan(
        FAMILIES["sdxl"]
    )
    assert capped.sizes == ((256, 256),)  # max_pixels shrinks them as it does requests


def test_compile_is_only_for_cuda_without_low_vram() -> None:
    assert not Placement.resolve("cpu", compile=True).compile
    if torch.cuda.is_available():
        assert Placement.resolve("cuda", compile=True).compile
        assert not Placement.resolve("cuda", compile=True, low_vram=True).compile


def test_loading_compiles_one_graph_per_bucket_for_the_unet_and_the_vae(
    compiled: tuple[LoadedModel, int],
) -> None:
    model, warmed = compiled
    forwards = compiled_forwards(model.txt2img)

    assert [type(f) for f in forwards] == [BucketedForward, BucketedForward]
    # 2 buckets x (UNet, VAE decoder), warmed at 2 and 8 images: on the CPU the convolution
    # backend's choice splits batches at 16 latents, so the UNet has a graph on each side.
    assert 4 <= warmed <= 8
    assert model.compile_s is not None and model.compile_s > 0
    assert compiled_forwards(model.img2img) == forwards  # the shared modules


async def test_queued_batches_of_any_size_reuse_the_warm_graphs(
    compiled: tuple[LoadedModel, int],
    make_runner: RunnerFactory,
    start_worker: WorkerFactory,
) -> None:
    model, _ = compiled
    unet, _ = compiled_forwards(model.txt2img)
    before, compiled_before = graphs(), unet.compiled_calls
    worker = await start_worker(make_runner(loader=lambda spec, placement: model), max_batch=8)

    jobs = [
        Job(f"j{i}", f"user{i % 3}", make_request(width=w, height=h, count=c, seed=i, steps=2))
        for i, (w, h, c) in enumerate(
            [(128, 128, 1), (128, 128, 3), (192, 128, 2), (192, 128, 4), (128, 128, 4)]
        )
    ]
    handles = [worker.submit(job) for job in jobs]
    results = [await handle.result for handle in handles]

    assert all(isinstance(r, JobResult) for r in results)
    assert graphs() == before  # nothing compiled while members wait
    assert unet.compiled_calls > compiled_before


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++"])
async def test_every_sampler_reuses_the_warm_graphs(
    compiled: tuple[LoadedModel, int],
    make_runner: RunnerFactory,
    start_worker: WorkerFactory,
    scheduler: str,
) -> None:
    """Samplers hand the UNet integer or float timesteps; neither may cost a compile."""
    model, _ = compiled
    unet, _ = compiled_forwards(model.txt2img)
    before, compiled_before = graphs(), unet.compiled_calls
    worker = await start_worker(make_runner(loader=lambda spec, placement: model))

    request = make_request(width=128, height=128, count=2, steps=2, scheduler=scheduler)
    assert isinstance(await worker.submit(Job("s", "a", request)).result, JobResult)

    assert graphs() == before
    assert unet.compiled_calls > compiled_before


async def test_other_sizes_and_single_latents_run_eagerly(
    compiled: tuple[LoadedModel, int],
    make_runner: RunnerFactory,
    start_worker: WorkerFactory,
) -> None:
    model, _ = compiled
    unet, vae = compiled_forwards(model.txt2img)
    before = graphs()
    eager_unet, eager_vae, compiled_unet = unet.eager_calls, vae.eager_calls, unet.compiled_calls
    worker = await start_worker(make_runner(loader=lambda spec, placement: model))

    upscale = make_request(
        kind=Kind.UPSCALE, width=256, height=256, strength=0.3, init_image=image_png(128, 128)
    )
    turbo = make_request(width=128, height=128, guidance=0.0, steps=2)  # a UNet batch of one
    for job in (Job("up", "a", upscale), Job("turbo", "a", turbo)):
        assert isinstance(await worker.submit(job).result, JobResult)

    assert graphs() == before
    assert unet.compiled_calls == compiled_unet
    assert unet.eager_calls > eager_unet
    assert vae.eager_calls == eager_vae + 2  # one decode each, both eager


async def test_compiled_and_eager_models_draw_the_same_image(
    compiled: tuple[LoadedModel, int],
    make_runner: RunnerFactory,
    start_worker: WorkerFactory,
) -> None:
    model, _ = compiled
    plain = await start_worker(make_runner())
    fast = await start_worker(make_runner(loader=lambda spec, placement: model))
    request = make_request(width=192, height=128, count=2, seed=7, steps=3)

    expected = await plain.submit(Job("plain", "a", request)).result
    got = await fast.submit(Job("fast", "a", request)).result

    for a, b in zip(expected.images, got.images, strict=True):
        diff = abs(pixels(a.png).astype(int) - pixels(b.png).astype(int))
        assert diff.max() <= 1


def test_the_cache_goes_to_the_data_folder_unless_the_admin_chose_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", "/srv/triton")

    use_cache_dir(tmp_path / "compile-cache")

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "compile-cache" / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == "/srv/triton"
    assert (tmp_path / "compile-cache").is_dir()


def test_a_plan_maps_image_sizes_to_latent_buckets() -> None:
    plan = CompilePlan(((512, 512), (640, 448)))

    assert plan.latent_sizes(8) == {(64, 64), (56, 80)}


def test_unloading_a_compiled_model_drops_its_graphs(
    make_runner: RunnerFactory, model_cache: ModelCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    released: list[str | None] = []
    runner = make_runner(
        registry=ModelRegistry([parse_model_entry("tiny"), parse_model_entry("other=tiny")]),
        # Both names share the cached tiny pipeline; "tiny" is marked compiled.
        loader=lambda spec, placement: dataclasses.replace(
            model_cache(spec, placement), spec=spec, compile_s=1.0 if spec.name == "tiny" else None
        ),
    )
    monkeypatch.setattr(
        "generation.runner.release_compiled",
        lambda: released.append(runner.model.spec.name if runner.model else None),
    )

    runner.ensure_model("tiny")
    runner.ensure_model("other")  # unloads the compiled one
    runner.ensure_model("tiny")  # unloads one that was not compiled

    assert released == [None]  # once, after the compiled model was let go


def test_only_the_default_model_is_compiled(
    make_runner: RunnerFactory, model_cache: ModelCache
) -> None:
    asked: dict[str, bool] = {}

    def loader(spec: ModelSpec, placement: Placement) -> LoadedModel:
        asked[spec.name] = placement.compile
        return model_cache(spec, Placement())

    runner = make_runner(
        registry=ModelRegistry([parse_model_entry("tiny"), parse_model_entry("other=tiny")]),
        loader=loader,
    )
    runner.placement = compiled_placement()

    runner.ensure_model("other")
    runner.ensure_model("tiny")

    assert asked == {"other": False, "tiny": True}


# Last in this file: the fallback drops every compiled graph, the module fixture's too.


def test_a_failed_warm_up_leaves_the_model_working_uncompiled(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def out_of_memory(*args: object) -> float:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("generation.loader.warm_up", out_of_memory)

    model = load_model(parse_model_entry("tiny"), compiled_placement())

    assert model.compile_s is None
    assert compiled_forwards(model.txt2img) == []
    assert "compiling failed (OutOfMemoryError" in caplog.text
    with torch.inference_mode():
        images = model.txt2img(
            prompt=["x"] * 2, width=128, height=128, num_inference_steps=2, output_type="pt"
        ).images
    assert images.shape == (2, 3, 128, 128)
