"""`sdbot run` without a token, `sdbot invite`, and the bot token staying out of the logs."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main
from bot.invite import required_permissions
from tests.bot.conftest import SMALL, BotStarter, job_id_of
from tests.bot.test_commands import reply

REPO = Path(__file__).resolve().parents[2]
APP_ID = 123456789012345678
# Shaped like a real bot token: base64 of the application id, a timestamp part, an HMAC part.
FAKE_TOKEN = (
    base64.b64encode(str(APP_ID).encode()).decode().rstrip("=")
    + ".GhIjKl.abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123"
)


@pytest.mark.slow
def test_run_without_a_token_explains_how_to_get_one(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "run"],
        cwd=tmp_path,  # no .env here
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "DISCORD_TOKEN is not set" in done.stderr
    assert "https://discord.com/developers/applications" in done.stderr
    assert "sdbot invite" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_invite_prints_the_oauth2_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("SDBOT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DISCORD_TOKEN", FAKE_TOKEN)
    assert main(["invite"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("https://discord.com/oauth2/authorize?")
    assert f"client_id={APP_ID}" in out
    assert "scope=bot+applications.commands" in out
    permissions = required_permissions().value
    assert f"permissions={permissions}" in out and permissions > 0
    assert FAKE_TOKEN not in out


async def test_the_bot_token_never_reaches_the_logs(
    start_bot: BotStarter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="aiosqlite")  # main() above raised it to INFO
    env = await start_bot()
    progress = await reply(await env.imagine("alice", f"a secret garden {SMALL}"))
    await env.result(job_id_of(progress))
    await reply(await env.fake.slash("alice", "general", "stats"))
    await env.stop()
    assert len(caplog.records) > 20, "DEBUG logging was captured"
    token = env.fake.token
    leaked = [r for r in caplog.records if token in r.getMessage() or token in str(r.args)]
    assert not leaked, leaked[0].getMessage()
    assert token not in caplog.text
    interaction_tokens = [record.token for record in env.fake.interactions]
    ours = [r.getMessage() for r in caplog.records if r.name.split(".")[0] in ("bot", "sdbot")]
    assert not [m for m in ours for t in interaction_tokens if t in m]
