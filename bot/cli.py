"""The `sdbot` command: run the bot, generate offline, list models, print the invite URL."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from bot.settings import Settings
from generation.errors import GenerationError

log = logging.getLogger("sdbot")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sdbot` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"sdbot: bad setting: {_settings_error(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # At DEBUG these print request URLs, gateway payloads and SQL parameters, which carry
    # interaction tokens (each one can post as the bot for 15 minutes): never below INFO.
    noisy_loggers = ("discord.http", "discord.webhook", "discord.gateway", "discord.client")
    for noisy in (*noisy_loggers, "aiosqlite"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))
    command = args.command or "run"
    try:
        if command == "imagine":
            from bot.offline import imagine

            return asyncio.run(imagine(settings, args))
        if command == "models":
            from bot.offline import list_models

            return list_models(settings)
        if command == "invite":
            from bot.invite import print_invite

            return print_invite(settings)
        from bot.__main__ import run_bot

        return run_bot(settings)
    except GenerationError as exc:
        print(f"sdbot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _settings_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        name = ".".join(str(p) for p in error["loc"])
        parts.append(f"{name}: {error['msg']} (got {error.get('input')!r})")
    return "; ".join(parts)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdbot", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the Discord bot (needs DISCORD_TOKEN in .env)")
    sub.add_parser("models", help="list model family presets and the configured models")
    sub.add_parser("invite", help="print the URL that adds the bot to a server")
    imagine = sub.add_parser(
        "imagine",
        help="generate offline through the same worker the bot uses",
        description="Inline flags work in the prompt too: --ar 16:9 --seed 42 --no text --n 2",
    )
    imagine.add_argument("prompt", help="the prompt, with optional inline flags")
    imagine.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("out.png"),
        help="output PNG (a grid when --n > 1; images beside it)",
    )
    imagine.add_argument("--negative", help="negative prompt")
    imagine.add_argument("--model", help="model name (see `sdbot models`)")
    imagine.add_argument("--aspect", help="aspect ratio such as 16:9")
    imagine.add_argument("--width", type=int)
    imagine.add_argument("--height", type=int)
    imagine.add_argument("--steps", type=int)
    imagine.add_argument("--guidance", "--cfg", type=float)
    imagine.add_argument("--seed", type=int)
    imagine.add_argument("--count", "--n", type=int, help="images, 1-4")
    imagine.add_argument("--scheduler", help="euler, euler-a, ddim, dpm++, ...")
    imagine.add_argument("--image", type=Path, help="input image for image-to-image")
    imagine.add_argument("--strength", type=float, help="image-to-image strength, 0-1")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
