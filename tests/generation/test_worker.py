"""GenerationWorker on the tiny model: batching, fairness, model switches, cancel, faults,
progress, a responsive event loop, and shutdown."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from generation.errors import JobCancelled, JobFailed, WorkerStopped
from generation.jobs import Job, JobResult, Phase, Progress
from generation.loader import LoadedModel, Placement
from generation.models import ModelRegistry, ModelSpec, parse_model_entry
from generation.worker import GenerationWorker, JobHandle
from tests.conftest import (
    Faults,
    ModelCache,
    RunnerFactory,
    WorkerFactory,
    assert_same_image,
    make_job,
)

WAIT = 30.0  # seconds before a test gives up waiting on the worker


async def result_of(handle: JobHandle) -> JobResult:
    return await asyncio.wait_for(handle.result, WAIT)


async def outcome_of(handle: JobHandle) -> JobResult | BaseException:
    """The job's result, or the exception its future holds."""
    try:
        return await result_of(handle)
    except (JobFailed, JobCancelled, WorkerStopped) as exc:
        return exc


async def arrived(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), WAIT)


def oom() -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


# Batching


async def test_compatible_jobs_from_different_users_run_as_one_pipeline_call(
    start_worker: WorkerFactory, pipeline_calls: list[int]
) -> None:
    worker = await start_worker()
    handles = [
        worker.submit(make_job("a", "alice", seed=1)),
        worker.submit(make_job("b", "bob", seed=2, count=2, prompt="a tall ship")),
        worker.submit(make_job("c", "carol", seed=3, negative_prompt="")),
    ]

    results = [await result_of(h) for h in handles]

    assert pipeline_calls == [4]
    assert [r.batch_size for r in results] == [3, 3, 3]
    assert [len(r.images) for r in results] == [1, 2, 1]


async def test_incompatible_jobs_run_in_separate_calls(
    start_worker: WorkerFactory, pipeline_calls: list[int]
) -> None:
    worker = await start_worker()
    handles = {
        "a": worker.submit(make_job("a", "alice")),
        "wide": worker.submit(make_job("wide", "bob", width=128)),
        "steps": worker.submit(make_job("steps", "carol", steps=3)),
        "d": worker.submit(make_job("d", "dave", seed=5)),  # compatible with "a"
    }

    results = {job_id: await result_of(h) for job_id, h in handles.items()}

    assert pipeline_calls == [2, 1, 1]
    assert {k: r.batch_size for k, r in results.items()} == {"a": 2, "wide": 1, "steps": 1, "d": 2}
    assert (results["wide"].images[0].width, results["wide"].images[0].height) == (128, 64)


async def test_max_batch_caps_the_images_in_one_call(
    start_worker: WorkerFactory, pipeline_calls: list[int]
) -> None:
    worker = await start_worker(max_batch=4)
    handles = [
        worker.submit(make_job(user, user, count=count, seed=n))
        for n, (user, count) in enumerate([("a", 2), ("b", 2), ("c", 2), ("d", 1)])
    ]

    results = [await result_of(h) for h in handles]

    assert pipeline_calls == [4, 3]
    assert [r.batch_size for r in results] == [2, 2, 2, 2]


# Fairness


async def test_one_members_backlog_does_not_starve_another(
    start_worker: WorkerFactory, faults: Faults
) -> None:
    gate = faults.gate()
    faults.on_batch = lambda jobs: gate.hold() if jobs[0].id == "busy" else None
    worker = await start_worker(max_batch=1)
    busy = worker.submit(make_job("busy", "zoe"))
    await arrived(gate.entered)

    handles = [worker.submit(make_job(f"a{i}", "alice")) for i in range(1, 6)]
    handles.append(worker.submit(make_job("b1", "bob", width=96)))  # does not batch with alice's
    assert worker.position("b1") == 2
    gate.release()
    for handle in [busy, *handles]:
        await result_of(handle)

    assert faults.batches == [["busy"], ["a1"], ["b1"], ["a2"], ["a3"], ["a4"], ["a5"]]


# Model switches


async def test_members_alternating_two_models_cause_few_loads_and_bounded_waits(
    make_runner: RunnerFactory, model_cache: ModelCache, faults: Faults
) -> None:
    # Two names for the tiny model: two models as far as the runner is concerned.
    registry = ModelRegistry([parse_model_entry("tiny"), parse_model_entry("other=tiny")])
    loads: list[str] = []

    def loader(spec: ModelSpec, placement: Placement) -> LoadedModel:
        loads.append(spec.name)
        return model_cache(spec, placement)

    gate = faults.gate()
    faults.on_batch = lambda jobs: gate.hold() if jobs[0].id == "busy" else None
    runner = make_runner(registry=registry, loader=loader)
    worker = GenerationWorker(runner, max_batch=1, max_per_user=10, max_skips=2)
    await worker.start(preload="tiny")
    try:
        busy = worker.submit(make_job("busy", "zoe"))
        await arrived(gate.entered)
        handles = []
        for n in range(1, 7):  # alice and bob take turns, on different models
            handles.append(worker.submit(make_job(f"a{n}", "alice", seed=n)))
            handles.append(worker.submit(make_job(f"b{n}", "bob", seed=n, model="other")))
        published = {h.job.id: h.latest.position for h in handles}
        gate.release()
        for handle in [busy, *handles]:
            await result_of(handle)
    finally:
        faults.release_all()
        await worker.stop(grace=WAIT)

    ran = [job_id for [job_id] in faults.batches[1:]]
    # Strict turns would run a1 b1 a2 b2 ...: a load for every batch, 11 after a1. Now
    # b1, a4 and b4, each next in turn with the other model loaded, are passed over
    # twice (max_skips) and then run.
    assert ran == ["a1", "a2", "a3", "b1", "b2", "b3", "a4", "a5", "a6", "b4", "b5", "b6"]
    assert loads == ["tiny", "other", "tiny", "other"]  # the preload, then three switches
    # The positions members were shown are the order the jobs ran in.
    assert published == {job_id: position for position, job_id in enumerate(ran, start=1)}


# Cancel


async def test_cancelling_a_waiting_job_removes_it_and_moves_the_rest_up(
    start_worker: WorkerFactory, faults: Faults
) -> None:
    gate = faults.gate()
    faults.on_batch = lambda jobs: gate.hold() if jobs[0].id == "busy" else None
    worker = await start_worker()
    busy = worker.submit(make_job("busy", "zoe"))
    await arrived(gate.entered)
    waiting = {u: worker.submit(make_job(u, u, width=96)) for u in ("w1", "w2", "w3")}
    assert [worker.position(u) for u in waiting] == [1, 2, 3]

    assert worker.cancel("w1")

    with pytest.raises(JobCancelled):
        await result_of(waiting["w1"])
    assert "w1" not in worker.queue and worker.position("w1") is None
    assert [worker.position("w2"), worker.position("w3")] == [1, 2]
    assert [waiting[u].latest.position for u in ("w2", "w3")] == [1, 2]
    assert not worker.cancel("w1")
    gate.release()
    for handle in (busy, waiting["w2"], waiting["w3"]):
        await result_of(handle)
    assert all("w1" not in batch for batch in faults.batches)


async def test_cancelling_a_running_job_interrupts_it_and_the_worker_goes_on(
    start_worker: WorkerFactory, faults: Faults
) -> None:
    gate = faults.gate()
    steps: list[int] = []

    def hold_long_job(step: int, _latents: torch.Tensor, jobs: list[Job]) -> None:
        if jobs[0].id == "long":
            steps.append(step)
            gate.hold()

    faults.on_step = hold_long_job
    worker = await start_worker()
    long = worker.submit(make_job("long", "alice", steps=8))
    after = worker.submit(make_job("after", "bob", width=96))
    await arrived(gate.entered)

    assert worker.cancel("long")
    gate.release()

    with pytest.raises(JobCancelled):
        await result_of(long)
    assert steps == [0]  # interrupted at the first step, not run to the end
    assert len((await result_of(after)).images) == 1
    assert not worker.cancel("long")


# Faults


async def test_out_of_memory_in_a_batch_retries_its_jobs_one_at_a_time(
    start_worker: WorkerFactory, faults: Faults
) -> None:
    def oom_when_batched(jobs: list[Job]) -> None:
        if len(jobs) > 1:
            raise oom()

    faults.on_batch = oom_when_batched
    worker = await start_worker()
    handles = [worker.submit(make_job(u, u, seed=n)) for n, u in enumerate("abc")]

    results = [await result_of(h) for h in handles]

    assert faults.batches == [["a", "b", "c"], ["a"], ["b"], ["c"]]
    assert [r.batch_size for r in results] == [1, 1, 1]


async def test_out_of_memory_for_one_job_fails_only_that_job(
    start_worker: WorkerFactory, faults: Faults
) -> None:
    def oom_with_b(jobs: list[Job]) -> None:
        if any(job.id == "b" for job in jobs):
            raise oom()

    faults.on_batch = oom_with_b
    worker = await start_worker()
    handles = {u: worker.submit(make_job(u, u, seed=n)) for n, u in enumerate("abc")}

    outcomes = {u: await outcome_of(h) for u, h in handles.items()}

    assert isinstance(outcomes["a"], JobResult) and isinstance(outcomes["c"], JobResult)
    assert isinstance(outcomes["b"], JobFailed)
    assert "out of GPU memory" in str(outcomes["b"])
    assert isinstance(await result_of(worker.submit(make_job("d", "dave"))), JobResult)


async def test_a_pipeline_exception_fails_only_the_job_it_belongs_to(
    start_worker: WorkerFactory, faults: Faults
) -> None:
    def break_b(step: int, _latents: torch.Tensor, jobs: list[Job]) -> None:
        if any(job.id == "b" for job in jobs):
            raise RuntimeError("injected failure")

    faults.on_step = break_b
    worker = await start_worker()
    handles = {u: worker.submit(make_job(u, u, seed=n)) for n, u in enumerate("abc")}

    outcomes = {u: await outcome_of(h) for u, h in handles.items()}

    assert isinstance(outcomes["a"], JobResult) and isinstance(outcomes["c"], JobResult)
    assert isinstance(outcomes["b"], JobFailed)
    # The user sees the kind of failure and a log reference, not the exception's text.
    assert "the pipeline failed (RuntimeError)" in str(outcomes["b"])
    assert "reference" in str(outcomes["b"])
    assert isinstance(await result_of(worker.submit(make_job("d", "dave"))), JobResult)


async def test_nan_latents_fail_only_their_job_and_leave_the_rest_of_the_batch_intact(
    start_worker: WorkerFactory, faults: Faults
) -> None:
    def poison_b(step: int, latents: torch.Tensor, jobs: list[Job]) -> None:
        offset = 0
        for job in jobs:
            if job.id == "b":
                latents[offset : offset + job.request.count] = float("nan")
            offset += job.request.count

    faults.on_step = poison_b
    worker = await start_worker()
    requests = {u: make_job(u, u, seed=n, count=n).request for n, u in enumerate("abc", start=1)}
    handles = {u: worker.submit(Job(u, u, r)) for u, r in requests.items()}

    outcomes = {u: await outcome_of(h) for u, h in handles.items()}

    assert isinstance(outcomes["b"], JobFailed) and "NaN" in str(outcomes["b"])
    faults.on_step = None
    for user in ("a", "c"):
        batched = outcomes[user]
        assert isinstance(batched, JobResult) and batched.batch_size == 3
        clean = await result_of(worker.submit(Job(f"{user}-again", user, requests[user])))
        for mine, reference in zip(batched.images, clean.images, strict=True):
            assert_same_image(mine.png, reference.png)


# The event loop


async def test_the_event_loop_stays_responsive_while_a_long_batch_runs(
    start_worker: WorkerFactory,
) -> None:
    worker = await start_worker()
    handle = worker.submit(make_job("big", "alice", width=256, height=256, steps=8, count=4))
    lags: list[float] = []

    while not handle.result.done():
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - started - 0.01)
    result = await result_of(handle)

    # A call that blocked the loop would stall it for about the whole batch (and leave only
    # a sample or two). Scheduling noise grows with the machine's load, as does the batch's
    # run time, so the bound is 0.5 s or a quarter of the batch, whichever is larger.
    assert len(lags) > 10
    assert max(lags) < max(0.5, result.elapsed / 4)


# Progress


async def collect(handle: JobHandle) -> list[Progress]:
    return [progress async for progress in handle.updates()]


async def test_updates_show_queue_positions_then_steps_with_previews_then_end(
    start_worker: WorkerFactory, faults: Faults
) -> None:
    first_gate, x_gate = faults.gate(), faults.gate()
    gates = {"busy": first_gate, "x": x_gate}
    faults.on_batch = lambda jobs: gates[jobs[0].id].hold() if jobs[0].id in gates else None
    worker = await start_worker()
    busy = worker.submit(make_job("busy", "zoe"))
    await arrived(first_gate.entered)
    x = worker.submit(make_job("x", "alice", count=2, steps=4))
    y = worker.submit(make_job("y", "bob", width=96))
    x_updates = asyncio.create_task(collect(x))
    y_updates = asyncio.create_task(collect(y))

    first_gate.release()
    await arrived(x_gate.entered)
    snapshot = worker.snapshot()
    assert [job.id for job in snapshot.running] == ["x"]
    assert [(job.id, position) for job, position, _ in snapshot.waiting] == [("y", 1)]
    x_gate.release()
    await result_of(busy)
    await result_of(x)
    await result_of(y)
    x_seen = await asyncio.wait_for(x_updates, WAIT)
    y_seen = await asyncio.wait_for(y_updates, WAIT)

    assert (x_seen[0].phase, x_seen[0].position) == (Phase.QUEUED, 1)
    y_queued = [p for p in y_seen if p.phase is Phase.QUEUED]
    assert [p.position for p in y_queued] == [2, 1]
    assert y_queued[-1].eta is not None  # the first batch's timing gives an estimate
    x_steps = [p for p in x_seen if p.phase is Phase.RUNNING and p.step > 0]
    assert x_steps and x_steps[-1].step == 4
    assert all(p.total == 4 for p in x_steps)
    assert [p.step for p in x_steps] == sorted(p.step for p in x_steps)
    for progress in x_steps:
        assert [image.size for image in progress.previews] == [(64, 64), (64, 64)]
    assert y_seen[-1].phase is Phase.RUNNING
    assert [p async for p in x.updates()] == []  # a finished job's stream is empty


# Shutdown


async def test_stop_interrupts_the_running_batch_and_returns_unfinished_jobs(
    start_worker: WorkerFactory, faults: Faults
) -> None:
    worker = await start_worker()
    gate = faults.gate(opener=worker.runner.stop_event)
    steps: list[int] = []

    def hold_until_stop(step: int, _latents: torch.Tensor, _jobs: list[Job]) -> None:
        steps.append(step)
        gate.hold()

    faults.on_step = hold_until_stop
    running = worker.submit(make_job("run", "alice", steps=8))
    await arrived(gate.entered)
    queued = [worker.submit(make_job(u, u, width=96)) for u in ("q1", "q2")]

    unfinished = await asyncio.wait_for(worker.stop(grace=WAIT), WAIT)

    assert [job.id for job in unfinished] == ["run", "q1", "q2"]
    for handle in (running, *queued):
        with pytest.raises(WorkerStopped):
            await result_of(handle)
    assert steps == [0]  # the batch was interrupted, not finished
    with pytest.raises(WorkerStopped):
        worker.submit(make_job("late", "dave"))


async def test_a_second_stop_after_a_timed_out_one_returns_quietly(
    start_worker: WorkerFactory, faults: Faults
) -> None:
    worker = await start_worker()
    gate = faults.gate()  # holds the GPU thread past the first stop's grace
    faults.on_step = lambda _step, _latents, _jobs: gate.hold()
    worker.submit(make_job("slow", "alice", steps=4))
    await arrived(gate.entered)

    unfinished = await worker.stop(grace=0.1)
    assert [job.id for job in unfinished] == ["slow"]
    gate.release()
    assert await worker.stop(grace=WAIT) == []
