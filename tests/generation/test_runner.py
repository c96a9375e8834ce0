"""BatchRunner, driven directly (as the GPU thread would): determinism, seeds, progress cadence."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pytest

from generation.errors import JobCancelled
from generation.jobs import Job, JobResult, Phase, Progress
from generation.output import read_parameters
from generation.request import SEED_MAX, Kind
from generation.runner import BatchRunner, Outcome
from tests.conftest import (
    Faults,
    RunnerFactory,
    assert_same_image,
    image_png,
    make_job,
    make_request,
    pixels,
)


def run(
    runner: BatchRunner, jobs: list[Job], cancelled: Collection[str] = ()
) -> tuple[dict[str, Outcome], list[Progress]]:
    """Run one batch; return its outcomes and every progress report, in order."""
    reports: list[Progress] = []
    outcomes = runner.run(
        jobs, lambda _job_id, progress: reports.append(progress), lambda job_id: job_id in cancelled
    )
    return outcomes, reports


def done(outcome: Outcome) -> JobResult:
    assert isinstance(outcome, JobResult), f"expected a result, got {outcome!r}"
    return outcome


def max_diff(a: bytes, b: bytes) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


def test_the_same_request_and_seed_give_identical_images(make_runner: RunnerFactory) -> None:
    runner = make_runner()
    job = make_job("j1", "alice", count=2)

    first = done(run(runner, [job])[0]["j1"])
    second = done(run(runner, [job])[0]["j1"])

    assert [i.png for i in first.images] == [i.png for i in second.images]
    assert max_diff(first.images[0].png, first.images[1].png) > 0  # seeds differ, images too


def test_image_i_of_a_job_uses_seed_plus_i(make_runner: RunnerFactory) -> None:
    runner = make_runner()
    outcomes, _ = run(runner, [make_job("multi", "alice", seed=42, count=3)])
    multi = done(outcomes["multi"])

    assert [image.seed for image in multi.images] == [42, 43, 44]
    assert [image.index for image in multi.images] == [0, 1, 2]
    for image in multi.images:
        alone = done(run(runner, [make_job("one", "alice", seed=image.seed)])[0]["one"])
        assert_same_image(image.png, alone.images[0].png)
        assert f"Seed: {image.seed}," in (read_parameters(image.png) or "")


def test_seeds_wrap_around_at_the_top_of_the_range() -> None:
    assert make_request(seed=SEED_MAX, count=3).seeds() == [SEED_MAX, 0, 1]


def test_a_seed_gives_the_same_image_alone_or_batched_with_other_jobs(
    make_runner: RunnerFactory,
) -> None:
    runner = make_runner()
    mine = make_job("mine", "alice", seed=1234, prompt="a lighthouse at dusk")
    others = [
        make_job("b", "bob", seed=7, count=2, prompt="a bowl of soup", negative_prompt=""),
        make_job("c", "carol", seed=99, prompt="three cats"),
    ]

    alone = done(run(runner, [mine])[0]["mine"])
    outcomes, _ = run(runner, [others[0], mine, others[1]])
    batched = done(outcomes["mine"])

    assert batched.batch_size == 3 and alone.batch_size == 1
    assert_same_image(alone.images[0].png, batched.images[0].png)
    for other in others:
        assert max_diff(done(outcomes[other.id]).images[0].png, alone.images[0].png) > 10


def test_every_step_is_reported_with_previews_when_the_interval_is_zero(
    make_runner: RunnerFactory,
) -> None:
    runner = make_runner(progress_interval=0.0)
    jobs = [make_job("a", "alice", count=2, steps=4), make_job("b", "bob", count=1, steps=4)]

    outcomes, reports = run(runner, jobs)

    assert all(isinstance(done(outcomes[job.id]), JobResult) for job in jobs)
    for job in jobs:
        steps = [r for r in reports if r.job_id == job.id and r.step > 0]
        assert [r.step for r in steps] == [1, 2, 3, 4]
        assert all(r.phase is Phase.RUNNING and r.total == 4 for r in steps)
        for report in steps:
            assert len(report.previews) == job.request.count
            # 64x64 pixels is an 8x8 latent; the preview scales it back up 8x.
            assert {p.size for p in report.previews} == {(64, 64)}
    assert runner.timer.seconds_per_image_step is not None
    assert runner.timer.seconds_per_image_step > 0


def test_a_long_interval_throttles_reports_to_the_first_and_last_step(
    make_runner: RunnerFactory,
) -> None:
    runner = make_runner(progress_interval=10.0)

    _, reports = run(runner, [make_job("a", "alice", steps=6)])

    # The first step reports at once (nothing was reported yet), then nothing is due
    # until the interval passes, except the final step, which always reports.
    assert [r.step for r in reports if r.step > 0] == [1, 6]


def test_no_previews_are_made_when_they_are_switched_off(make_runner: RunnerFactory) -> None:
    runner = make_runner(previews=False)

    _, reports = run(runner, [make_job("a", "alice", steps=2)])

    steps = [r for r in reports if r.step > 0]
    assert steps and all(r.previews == () for r in steps)


def test_the_first_report_says_loading_until_the_model_is_resident(
    make_runner: RunnerFactory,
) -> None:
    runner = make_runner()
    assert runner.model is None

    _, cold = run(runner, [make_job("a", "alice")])
    _, warm = run(runner, [make_job("b", "alice")])

    assert cold[0].phase is Phase.LOADING and cold[0].total == 2
    assert warm[0].phase is Phase.RUNNING


def test_a_job_cancelled_while_running_is_interrupted(
    make_runner: RunnerFactory, faults: Faults
) -> None:
    runner = make_runner()
    seen: list[int] = []
    faults.on_step = lambda step, _latents, _jobs: seen.append(step)

    outcomes, _ = run(runner, [make_job("a", "alice", steps=8)], cancelled={"a"})

    assert isinstance(outcomes["a"], JobCancelled)
    assert seen == [0]  # the pipeline stopped after the first step


@pytest.mark.parametrize(
    ("steps", "strength", "expected"),
    [(4, 1.0, 4), (4, 0.5, 2), (8, 0.3, 2), (2, 0.3, 1), (1, 0.05, 1)],
)
def test_image_jobs_run_and_report_steps_times_strength_but_at_least_one(
    make_runner: RunnerFactory, faults: Faults, steps: int, strength: float, expected: int
) -> None:
    runner = make_runner()
    ran: list[int] = []
    faults.on_step = lambda step, _latents, _jobs: ran.append(step)
    request = make_request(
        kind=Kind.IMG2IMG, steps=steps, strength=strength, init_image=image_png(64, 64)
    )

    outcomes, reports = run(runner, [Job("img", "alice", request)])

    assert isinstance(outcomes["img"], JobResult), outcomes["img"]
    assert ran == list(range(expected))
    assert [(r.step, r.total) for r in reports if r.step > 0] == [
        (n, expected) for n in range(1, expected + 1)
    ]


# Where a batch's time goes


def test_a_finished_batch_reports_its_phases(make_runner: RunnerFactory) -> None:
    runner = make_runner()
    outcomes, _ = run(runner, [make_job("a", "u", count=2, steps=4), make_job("b", "v", steps=4)])

    phases = runner.phases
    assert all(isinstance(o, JobResult) for o in outcomes.values())
    assert phases is not None and (phases.images, phases.steps) == (3, 4)
    parts = (phases.prepare_s, phases.denoise_s, phases.decode_s, phases.finish_s)
    assert all(part >= 0 for part in parts)
    assert phases.denoise_s > 0 and phases.decode_s > 0
    assert phases.device_s <= phases.wall_s


def test_an_interrupted_batch_reports_no_phases(make_runner: RunnerFactory) -> None:
    runner = make_runner()
    run(runner, [make_job("a", "u", steps=4)], cancelled={"a"})

    assert runner.phases is None
