"""bench/gpu.py: its FLOP arithmetic, its request mix, and one CPU run of the whole harness.

The run uses the tiny model with two requests (`--quick`), so the benchmark's code
path (baseline pipeline, sdbot's worker with a random-weight loader, the table)
cannot rot between the rare GPU runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu import (
    Bench,
    Compiling,
    Experiment,
    Row,
    Setup,
    mixed_burst,
    render,
    target_verdict,
)
from bench.gpu_models import PEAK_TFLOPS, PROFILES, floor_ms, image_tflop, profile_for

ROOT = Path(__file__).resolve().parents[2]
SD15, SDXL = PROFILES["sd15"], PROFILES["sdxl"]


def test_sd15_image_costs_design_figures() -> None:
    # DESIGN.md: 0.80 TFLOP per UNet forward, doubled by CFG, 25 steps, + 2.5 for the VAE.
    assert image_tflop(SD15, 512, 512, 25, 7.5) == pytest.approx(25 * 2 * 0.80 + 2.5)
    # ... which is the "floor near 54 ms per image" at 790 TFLOP/s.
    assert floor_ms(42.5) == pytest.approx(53.8, abs=0.1)


def test_sdxl_image_cost() -> None:
    assert image_tflop(SDXL, 1024, 1024, 25, 6.0) == pytest.approx(25 * 2 * 6.76 + 10.5)


def test_guidance_free_runs_one_unet_pass_per_step() -> None:
    assert image_tflop(SD15, 512, 512, 1, 0.0) == pytest.approx(0.80 + 2.5)
    assert image_tflop(SD15, 512, 512, 4, 1.0) == pytest.approx(4 * 0.80 + 2.5)


def test_cost_scales_with_pixel_area() -> None:
    square = image_tflop(SD15, 512, 512, 25, 7.5)
    wide = image_tflop(SD15, 576, 448, 25, 7.5)
    tall = image_tflop(SD15, 512, 768, 25, 7.5)
    assert square is not None and wide is not None and tall is not None
    assert wide == pytest.approx(square * 576 * 448 / 512**2)
    assert tall == pytest.approx(square * 1.5)


def test_tiny_model_has_no_flop_figures() -> None:
    assert image_tflop(PROFILES["tiny"], 128, 128, 2, 7.5) is None


def test_floor_uses_the_given_peak() -> None:
    assert floor_ms(790.0) == pytest.approx(1000.0)
    assert floor_ms(100.0, peak_tflops=1000.0) == pytest.approx(100.0)


def test_burst_mixes_users_counts_and_two_aspect_ratios() -> None:
    experiment = Experiment(SD15, "sdbot", Setup(max_batch=8), 32, 25, 7.5)
    jobs = mixed_burst(experiment)
    assert len(jobs) == 32
    assert len({job.user for job in jobs}) == 8
    counts = [job.request.count for job in jobs]
    assert set(counts) == {1, 2, 3, 4}
    assert sum(counts) == 80
    sizes = {(job.request.width, job.request.height) for job in jobs}
    assert sizes == {(512, 512), (576, 448)}
    assert all(w % 64 == 0 and h % 64 == 0 for w, h in sizes)
    assert len({job.id for job in jobs}) == 32


def test_cpu_profiles_shrink_the_real_architectures() -> None:
    assert profile_for("sd15", cuda=True) == SD15
    small = profile_for("sd15", cuda=False)
    assert small.steps == 1 and max(small.buckets[0]) <= 128


def test_table_speed_and_floor_columns() -> None:
    rows = [
        Row("sd15@512", "baseline", images_per_s=2.0, tflops=85.0, is_baseline=True),
        Row(
            "sd15@512",
            "sdbot bf16, max_batch 16",
            images_per_s=9.0,
            tflops=382.5,
            first_preview_s=0.3,
        ),
        Row("sd15@512", "VAE decode only", images_per_s=50.0, comparable=False),
    ]
    table = render(rows).splitlines()
    assert table[0].startswith("| model | mode | images/s")
    assert "| 4.50x |" in table[3]
    assert "| 48 |" in table[3]  # 382.5 / 790 TFLOP/s
    assert "| - |" in table[4] and "x |" not in table[4]
    verdict = target_verdict(rows, PEAK_TFLOPS)
    assert verdict is not None
    assert "4.50x baseline (>= 4x: yes)" in verdict
    assert "48% of the FLOP floor (>= 40%: yes)" in verdict
    assert "(< 1 s: yes)" in verdict


def test_budget_skips_what_no_longer_fits(tmp_path: Path) -> None:
    from bench.gpu import Device

    plan = [Experiment(PROFILES["tiny"], "sdbot", Setup(), 2, 2, 7.5, estimate_s=60)]
    bench = Bench(
        Device("cpu"),
        plan,
        deadline=0.0,
        compiling=Compiling(),
        peak_tflops=PEAK_TFLOPS,
        out=tmp_path / "gpu.md",
    )
    bench.run()
    assert len(bench.rows) == 1 and bench.rows[0].notes.startswith("skipped")
    assert "skipped" in (tmp_path / "gpu.md").read_text()


def _final_rows(output: str) -> list[list[str]]:
    final = output.split("# FINAL", 1)[1]
    lines = [line for line in final.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def _cpu_bench(*args: str, timeout: float) -> list[list[str]]:
    """Run bench/gpu.py on the CPU with the tiny model; the final table's rows."""
    command = [sys.executable, "bench/gpu.py", "--device", "cpu", "--model", "tiny", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return _final_rows(done.stdout)


@pytest.mark.slow
def test_cpu_run_of_the_whole_harness(tmp_path: Path) -> None:
    out = tmp_path / "gpu.md"
    rows = _cpu_bench("--requests", "2", "--quick", "--out", str(out), timeout=240)
    modes = {row[1].split(":")[0].split(" ")[0]: row for row in rows}
    assert set(modes) == {"baseline", "sdbot"}
    for row in rows:
        assert float(row[2]) > 0, row  # images/s
    assert "2 jobs" in modes["sdbot"][-1]
    assert "safety checker" in rows[-1][1] and "burst time: prepare" in rows[-1][-1]
    assert out.read_text().count("\n| tiny@128 |") == 3


@pytest.mark.slow
def test_cpu_run_of_the_compile_rows(tmp_path: Path) -> None:
    """The torch.compile rows with dynamo's "eager" backend (inductor's code generation
    takes minutes on two cores): sdbot's compile at load, the burst with no graph
    compiled, the phase breakdown, and the restart probe in a new process."""
    rows = _cpu_bench(
        "--requests", "3", "--compile-only", "--compile-backend", "eager", timeout=300
    )
    assert len(rows) == 3 and not any("ERROR" in row[-1] for row in rows), rows
    compiled, restart, unet_only = rows
    assert "compiled UNet+VAE" in compiled[1] and "compiled UNet," in unet_only[1]
    for row in (compiled, unet_only):
        assert float(row[2]) > 0  # images/s
        assert "0 at warm-up, 0 during the burst" in row[-1]
        assert "burst time: prepare" in row[-1] and "UNet steps" in row[-1]
    assert "a new process compiling from the cache" in restart[-1]
    assert float(restart[6]) > 0  # its compile seconds
