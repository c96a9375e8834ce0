"""`sdbot run` as a real process against the fake Discord: killed, stopped, started on a
broken data directory or with unsafe weights. The bot token must never reach its logs."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.reliability.conftest import new_token
from tests.reliability.support import (
    BotProcess,
    assert_no_secret,
    bot_env,
    delivered_once,
    job_id,
    jobs,
    orphans,
    wait_delivered,
    wait_recorded,
)
from tests.support.fake_discord import FakeDiscord

pytestmark = pytest.mark.slow

USERS = ("alice", "bob", "mod", "admin", "owner")


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=new_token()) as server:
        yield server


@pytest.fixture
def processes() -> list[BotProcess]:
    return []


@pytest.fixture(autouse=True)
async def _kill_leftovers(processes: list[BotProcess]) -> AsyncIterator[None]:
    yield
    for process in processes:
        await process.ensure_stopped()


async def launch(
    fake: FakeDiscord,
    tmp_path: Path,
    processes: list[BotProcess],
    name: str,
    *,
    ready: bool = True,
    preexec_fn: object = None,
    **env: str,
) -> BotProcess:
    """Start `sdbot run` (data in tmp_path/data, log in tmp_path/<name>.log)."""
    process = BotProcess(
        bot_env(fake, tmp_path / "data", **env),
        tmp_path / f"{name}.log",
        cwd=tmp_path,
        preexec_fn=preexec_fn,  # type: ignore[arg-type]
    )
    processes.append(process)
    await process.start()
    if ready:
        await process.wait_ready()
    return process


async def submit(fake: FakeDiscord, prompt: str, users: tuple[str, ...] = USERS) -> list[int]:
    """Each user runs /imagine `prompt`; returns the accepted job ids."""
    accepted = []
    for user in users:
        record = await fake.slash(user, "general", "imagine", {"prompt": f"{user}: {prompt}"})
        await record.wait_response(timeout=10)
        assert not record.ephemeral, record.content
        accepted.append(job_id(record))
    return accepted


def states(data_dir: Path) -> dict[int, str]:
    return {i: r["state"] for i, r in jobs(data_dir / "sdbot.sqlite3").items()}


async def test_sigkill_mid_batch_then_restart_delivers_every_job_once(
    fake: FakeDiscord, tmp_path: Path, processes: list[BotProcess]
) -> None:
    data = tmp_path / "data"
    first = await launch(fake, tmp_path, processes, "first", SDBOT_MAX_BATCH="2")
    accepted = await submit(fake, "a castle --size 128x128 --steps 10 --n 1")
    await fake.wait_for_message(lambda m: "step " in m.content, timeout=60)
    first.send(signal.SIGKILL)
    assert await first.wait_exit() == -signal.SIGKILL
    at_kill = states(data)
    assert "running" in at_kill.values() and "queued" in at_kill.values(), at_kill

    second = await launch(fake, tmp_path, processes, "second", SDBOT_MAX_BATCH="2")
    await wait_delivered(fake, accepted, timeout=120)
    await wait_recorded(data / "sdbot.sqlite3", accepted, timeout=20)
    assert delivered_once(fake, accepted) == {}
    assert set(states(data).values()) == {"done"}
    second.send(signal.SIGTERM)
    assert await second.wait_exit() == 0
    assert orphans(data) == []
    for process in (first, second):
        assert_no_secret(process.log(), fake.token, process.log_path.name)


async def test_sigterm_stops_gracefully_and_requeues_the_running_job(
    fake: FakeDiscord, tmp_path: Path, processes: list[BotProcess]
) -> None:
    data = tmp_path / "data"
    first = await launch(
        fake, tmp_path, processes, "first", SDBOT_MAX_BATCH="1", SDBOT_LOG_LEVEL="DEBUG"
    )
    # Failures on the way, for the log check: a refused input, a 500, a dropped gateway.
    refused = await fake.slash("alice", "general", "imagine", {"prompt": "x --steps 0"})
    await refused.wait_response(timeout=10)
    assert refused.ephemeral
    fake.fail_next("PATCH /webhooks/", 500)
    accepted = await submit(fake, "a bridge --size 128x128 --steps 12 --n 1", USERS[:3])
    await fake.disconnect_gateway()
    running = await fake.wait_for_message(lambda m: "step " in m.content, timeout=60)
    started = time.monotonic()
    first.send(signal.SIGTERM)
    assert await first.wait_exit(timeout=60) == 0
    stopped_in = time.monotonic() - started
    assert stopped_in < 15, f"graceful stop took {stopped_in:.1f} s"
    assert "stopped" in first.log()
    after = states(data)
    assert set(after.values()) <= {"queued", "done"}, after  # the running job went back
    assert orphans(data) == []
    interrupted = next(j for j in accepted if f"**#{j}**" in running.versions[0].content)
    assert after[interrupted] == "queued"
    assert jobs(data / "sdbot.sqlite3")[interrupted]["attempts"] == 0  # a stop is no crash
    assert "restart" in fake.message(running.id).content

    second = await launch(fake, tmp_path, processes, "second", SDBOT_MAX_BATCH="1")
    await wait_delivered(fake, accepted, timeout=120)
    await wait_recorded(data / "sdbot.sqlite3", accepted, timeout=20)
    assert delivered_once(fake, accepted) == {}
    second.send(signal.SIGTERM)
    assert await second.wait_exit() == 0
    assert set(states(data).values()) == {"done"}
    assert orphans(data) == []
    for process in (first, second):
        assert_no_secret(process.log(), fake.token, process.log_path.name)
    assert_no_secret((data / "sdbot.sqlite3").read_bytes().decode("latin-1"), fake.token, "db")
    # Interaction tokens (each can post as the bot for 15 minutes) stay out of logs too.
    for interaction in fake.interactions:
        assert interaction.token not in first.log() + second.log()


# -- refusing to start -----------------------------------------------------------------------


async def start_and_fail(
    fake: FakeDiscord, tmp_path: Path, processes: list[BotProcess], name: str, **kw: object
) -> tuple[int, str]:
    process = await launch(fake, tmp_path, processes, name, ready=False, **kw)  # type: ignore[arg-type]
    code = await process.wait_exit(timeout=90)
    assert_no_secret(process.log(), fake.token, process.log_path.name)
    return code, process.log()


async def test_data_dir_that_is_a_file(
    fake: FakeDiscord, tmp_path: Path, processes: list[BotProcess]
) -> None:
    (tmp_path / "data").write_text("not a directory")
    code, log = await start_and_fail(fake, tmp_path, processes, "file")
    assert code == 3, log
    assert "cannot open the data directory" in log and str(tmp_path / "data") in log


async def test_data_dir_unwritable(
    fake: FakeDiscord, tmp_path: Path, processes: list[BotProcess]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits; the immutable flag binds root too
        if await run("chattr", "+i", str(data)) != 0:
            pytest.skip("running as root on a file system without chattr +i")
    else:
        data.chmod(0o555)
    try:
        code, log = await start_and_fail(fake, tmp_path, processes, "unwritable")
    finally:
        if os.geteuid() == 0:
            await run("chattr", "-i", str(data))
        data.chmod(0o755)
    assert code == 3, log
    assert "cannot open the data directory" in log and str(data) in log


async def run(*argv: str) -> int:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await process.wait()


def no_space_left() -> None:
    """In the child: every write that would grow a file fails (EFBIG), as on a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "existing-db"])
async def test_disk_full_at_start(
    fake: FakeDiscord, tmp_path: Path, processes: list[BotProcess], existing: bool
) -> None:
    if existing:
        from storage import Storage

        storage = await Storage.open(tmp_path / "data")
        await storage.close()
    code, log = await start_and_fail(fake, tmp_path, processes, "full", preexec_fn=no_space_left)
    assert code == 3, log
    assert "cannot open the data directory" in log
    assert "disk I/O error" in log or "disk is full" in log  # SQLite's words for it
    assert "disk has free space" in log


async def test_pickled_weights_are_refused(
    fake: FakeDiscord, tmp_path: Path, processes: list[BotProcess]
) -> None:
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"\x80\x04not really a pickle")
    code, log = await start_and_fail(fake, tmp_path, processes, "ckpt", SDBOT_MODEL=str(checkpoint))
    assert code == 1, log
    assert "refusing to load" in log and "pickled weights" in log
    # A diffusers folder whose weights are only pickles is refused when it loads.
    folder = tmp_path / "pickled-model"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (folder / "unet" / "config.json").write_text(json.dumps({"sample_size": 64}))
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04")
    code, log = await start_and_fail(fake, tmp_path, processes, "folder", SDBOT_MODEL=str(folder))
    assert code == 1, log
    assert "refusing to load" in log and "pickles" in log


async def test_wrong_token_is_a_clear_error_and_not_logged(
    fake: FakeDiscord, tmp_path: Path, processes: list[BotProcess]
) -> None:
    wrong = new_token()
    code, log = await start_and_fail(
        fake, tmp_path, processes, "wrong-token", DISCORD_TOKEN=wrong, SDBOT_LOG_LEVEL="DEBUG"
    )
    assert code == 2, log
    assert "Discord refused the token" in log
    assert_no_secret(log, wrong, "the log of a refused login")
