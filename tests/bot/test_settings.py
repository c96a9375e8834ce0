"""Settings: every one documented in .env.example, bad values refused by name, and the
compile settings reaching the generation side; the offline demo's output files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.assembly import make_registry, make_worker
from bot.cli import main
from bot.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no .env exists, so only the environment given here counts."""
    monkeypatch.chdir(tmp_path)


def test_env_example_lists_every_setting() -> None:
    example = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z_]+)=", example, flags=re.MULTILINE))
    aliases = {field.alias for field in Settings.model_fields.values()}

    assert aliases <= listed, f"missing from .env.example: {sorted(aliases - listed)}"


def test_compile_aspects_parse_and_feed_the_placement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDBOT_COMPILE_ASPECTS", " 16:9, 1:1 ,")
    monkeypatch.setenv("SDBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SDBOT_MAX_PIXELS", str(512 * 512))
    monkeypatch.setenv("SDBOT_MAX_BATCH", "2")
    settings = Settings()

    placement = make_worker(settings, make_registry(settings)).runner.placement

    assert placement.compile_aspects == ((16, 9), (1, 1))
    assert placement.compile_cache == tmp_path / "data" / "compile-cache"
    assert placement.max_pixels == 512 * 512
    assert placement.max_images == 4  # one job's 4 images outnumber SDBOT_MAX_BATCH=2


@pytest.mark.parametrize("value", ["16x9", "0:1", "1:1,wide", ""])
def test_a_bad_compile_aspect_is_refused_naming_the_setting_and_the_value(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SDBOT_COMPILE_ASPECTS", value)

    assert main(["models"]) == 2

    error = capsys.readouterr().err
    assert "bad setting" in error and "SDBOT_COMPILE_ASPECTS" in error
    assert repr(value) in error


def test_the_offline_demo_writes_a_grid_and_each_image(tmp_path: Path) -> None:
    from PIL import Image

    from generation.output import read_parameters

    out = tmp_path / "out" / "fox.png"
    args = ["imagine", "a fox --seed 5", "--model", "tiny", "--n", "2", "--steps", "2"]

    assert main([*args, "--width", "128", "--height", "64", "-o", str(out)]) == 0

    with Image.open(out) as grid:
        assert grid.size[0] > 2 * 128 and grid.size[1] >= 64  # two 128x64 images side by side
    for index, seed in ((1, 5), (2, 6)):
        image = tmp_path / "out" / f"fox-{index}.png"
        assert f"Seed: {seed}," in (read_parameters(image.read_bytes()) or "")
