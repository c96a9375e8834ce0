"""Hostile and malformed input, table-driven, through the real discord.py client.

Every row is something a member (or a modified client) can send: slash options, inline
flags in the prompt, uploaded attachments, button clicks with tampered custom_ids, remix
modal submissions, other members' jobs. Each must get an ephemeral reply naming the rule
and the value that broke it, and must write nothing: the row counts of every table in the
SQLite file (jobs, rate usage, images, user defaults, guild config) stay the same.

Values Discord itself refuses before the bot sees them (an integer option outside its
declared range, a string option over 6000 characters) go in as inline flags, or as "raw"
interactions that skip the Discord client's checks: a modified client, or a server admin
who opened /config to everyone in the integration settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.client import SdBot
from bot.service import JobService
from generation.request import Limits
from generation.worker import GenerationWorker
from storage import Storage
from tests.conftest import Faults, ModelCache
from tests.reliability.conftest import new_token
from tests.reliability.hostile import (
    encoded,
    fifty_megabytes,
    png_header_only,
    truncated_png,
)
from tests.reliability.support import (
    job_id,
    jobs,
    poll,
    result_messages,
    row_counts,
    wait_delivered,
)
from tests.support.fake_discord import FakeDiscord, FakeMessage, InteractionRecord, run_client
from tests.support.fake_discord.interactions import (
    APPLICATION_COMMAND,
    INTEGER,
    MESSAGE_COMPONENT,
    NUMBER,
    STRING,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class World:
    """The bot and what the table acts on: finished and running jobs of two members."""

    fake: FakeDiscord
    bot: SdBot
    db_path: Path
    alice_job: int  # done, 2 images
    alice_result: FakeMessage
    bob_job: int  # done, 1 image
    bob_result: FakeMessage
    bob_running: int  # held on the GPU for the whole module
    bob_progress: FakeMessage


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    tmp_path_factory: pytest.TempPathFactory, model_cache: ModelCache, tiny_registry: Any, cpu: Any
) -> AsyncIterator[World]:
    from generation.runner import BatchRunner

    faults = Faults()
    async with contextlib.AsyncExitStack() as stack:
        fake = await stack.enter_async_context(FakeDiscord(token=new_token()))
        data_dir = tmp_path_factory.mktemp("hostile") / "data"
        storage = await Storage.open(data_dir)
        stack.push_async_callback(storage.close)
        runner = BatchRunner(
            tiny_registry, cpu, progress_interval=0.0, loader=model_cache, faults=faults
        )
        worker = GenerationWorker(runner, max_batch=8, queue_size=100, max_per_user=3)
        await worker.start(preload="tiny")
        stack.push_async_callback(worker.stop, 20.0)
        service = JobService(storage, worker, tiny_registry, Limits())
        bot = SdBot(
            storage=storage,
            service=service,
            registry=tiny_registry,
            progress_interval=0.2,
            dev_guild_id=fake.guild.id,
            guild_ready_timeout=0.05,
        )
        await stack.enter_async_context(run_client(bot, fake))
        stack.callback(faults.release_all)

        async def done_job(user: str, prompt: str) -> tuple[int, FakeMessage]:
            record = await fake.slash(user, "general", "imagine", {"prompt": prompt})
            await record.wait_response()
            job = job_id(record)
            await wait_delivered(fake, [job], timeout=60)
            return job, result_messages(fake, job)[0]

        alice_job, alice_result = await done_job("alice", "a red barn --size 64x64 --n 2 --steps 2")
        bob_job, bob_result = await done_job("bob", "a blue boat --size 64x64 --n 1 --steps 2")
        gate = faults.gate()
        faults.on_batch = lambda batch: gate.hold()
        record = await fake.slash(
            "bob", "general", "imagine", {"prompt": "a slow ship --size 64x64"}
        )
        await record.wait_response()
        await gate.entered.wait()
        running = job_id(record)
        await poll(
            lambda: jobs(data_dir / "sdbot.sqlite3")[running]["state"] == "running",
            10,
            "the held job to be running",
        )
        assert record.message is not None
        yield World(
            fake,
            bot,
            data_dir / "sdbot.sqlite3",
            alice_job,
            alice_result,
            bob_job,
            bob_result,
            job_id(record),
            record.message,
        )


# -- ways in ---------------------------------------------------------------------------------

Act = Callable[[World], Awaitable[InteractionRecord]]


def imagine(prompt: str, user: str = "alice", **options: Any) -> Act:
    async def act(w: World) -> InteractionRecord:
        return await w.fake.slash(user, "general", "imagine", {"prompt": prompt, **options})

    return act


def upload(data: bytes, filename: str, content_type: str, prompt: str = "make it blue") -> Act:
    async def act(w: World) -> InteractionRecord:
        stored = w.fake.upload(data, filename, content_type)
        return await w.fake.slash(
            "alice", "general", "imagine", {"prompt": prompt, "image": stored}
        )

    return act


def _resolved(w: World, options: dict[str, Any]) -> dict[str, Any]:
    """Option values; a callable is given the World (for ids known only at run time)."""
    return {k: v(w) if callable(v) else v for k, v in options.items()}


def command(name: str, user: str = "alice", **options: Any) -> Act:
    async def act(w: World) -> InteractionRecord:
        return await w.fake.slash(user, "general", name, _resolved(w, options))

    return act


def raw_command(name: str, user: str = "alice", **options: Any) -> Act:
    """A slash command whose option values skip the Discord client's type and range checks."""

    async def act(w: World) -> InteractionRecord:
        command_name, *path = name.split()
        definition = w.fake._dispatcher.find_command(command_name, w.fake.channel("general"))
        declared = definition.get("options") or []
        for sub in path:
            parent = next(o for o in declared if o["name"] == sub)
            declared = parent.get("options") or []
        types = {o["name"]: o["type"] for o in declared}
        leaves: list[dict[str, Any]] = [
            {"type": types[k], "name": k, "value": v} for k, v in _resolved(w, options).items()
        ]
        assert all(o["type"] in (STRING, INTEGER, NUMBER) for o in leaves)
        for sub in reversed(path):
            leaves = [{"type": 1, "name": sub, "options": leaves}]
        data = {"id": definition["id"], "name": command_name, "type": 1, "options": leaves}
        if "guild_id" in definition:
            data["guild_id"] = definition["guild_id"]
        return await w.fake._dispatcher.dispatch(
            APPLICATION_COMMAND, w.fake.user(user), w.fake.channel("general"), data
        )

    return act


def click(custom_id: str, on: str, user: str = "alice") -> Act:
    """`user` clicks a button that is on the message `on` (an attribute of World)."""

    async def act(w: World) -> InteractionRecord:
        return await w.fake.click(user, getattr(w, on), custom_id.format(w=w))

    return act


def forged_click(custom_id: str, user: str = "alice") -> Act:
    """A click on a button whose custom_id the bot never made.

    Discord delivers clicks only for components on the stored message, and discord.py
    ignores a custom_id that is not on the interaction's message, so the forgery has to
    carry a message payload with the button on it (which only a modified Discord could
    send). It proves the bot's own checks, not Discord's.
    """

    async def act(w: World) -> InteractionRecord:
        forged = copy.deepcopy(w.alice_result)
        button = {"type": 2, "style": 2, "label": "U1", "custom_id": custom_id.format(w=w)}
        forged.components = [{"type": 1, "components": [button]}]
        data = {"custom_id": button["custom_id"], "component_type": 2}
        return await w.fake._dispatcher.dispatch(
            MESSAGE_COMPONENT, w.fake.user(user), w.fake.channel("general"), data, source=forged
        )

    return act


def remix(prompt: str, negative: str = "") -> Act:
    """alice opens the remix modal on her finished job and submits `prompt`."""

    async def act(w: World) -> InteractionRecord:
        opened = await w.fake.click("alice", w.alice_result, f"sdbot:remix:{w.alice_job}:0")
        await opened.wait_response()
        assert opened.modal is not None, opened.content
        return await w.fake.submit_modal(
            "alice", opened, values={"prompt": prompt, "negative": negative}
        )

    return act


# -- the table -------------------------------------------------------------------------------

LONG_DIGITS = "9" * 5000


@dataclass(frozen=True)
class Case:
    name: str
    act: Act
    expect: tuple[str, ...]


def case(name: str, act: Act, *expect: str) -> Any:
    return pytest.param(Case(name, act, expect), id=name)


CASES = [
    # prompts: length, control, invisible and bidi characters
    case("prompt-1501", imagine("a" * 1501), "prompt is 1501 characters", "limit is 1500"),
    case("prompt-6000", imagine("b " * 3000), "prompt is 5999 characters", "limit is 1500"),
    case("nul", imagine("a cat\x00"), "control character U+0000", "prompt"),
    case("ansi-escape", imagine("a \x1b[31mred\x1b[0m cat"), "control character U+001B"),
    case("delete-char", imagine("a\x7fcat"), "control character U+007F"),
    case("c1-control", imagine("a\x85cat"), "control character U+0085"),
    case("zero-width-only", imagine("\u200b\u200c\u200d\u2060\ufeff"), "prompt is empty"),
    case("rtl-override-only", imagine("\u202e\u202d\u2066\u2069"), "prompt is empty"),
    case("blank", imagine("   "), "prompt is empty"),
    case("flags-only", imagine("--steps 2 --seed 3"), "prompt is empty"),
    case(
        "negative-nul",
        imagine("a cat", negative="ugly\x00"),
        "negative prompt",
        "control character U+0000",
    ),
    case(
        "negative-6000",
        imagine("a cat", negative="n" * 6000),
        "negative prompt is 6000",
        "limit is 1500",
    ),
    case(
        "negative-10000-raw",
        raw_command("imagine", prompt="a cat", negative="n" * 10000),
        "negative prompt is 10000 characters",
        "limit is 1500",
    ),
    # sizes
    case("size-0", imagine("a cat --size 0x0"), "width must be a multiple of 8", "got 0"),
    case("size-minus-8", imagine("a cat --size -8x-8"), "--size must be WIDTHxHEIGHT", "'-8x-8'"),
    case("size-13", imagine("a cat --size 13x13"), "width must be a multiple of 8", "got 13"),
    case("size-100000", imagine("a cat --size 100000x100000"), "between 64 and 2048", "got 100000"),
    case("size-pixels", imagine("a cat --size 2048x2048"), "4194304 pixels", "limit is 1048576"),
    case("size-ratio", imagine("a cat --size 64x2048"), "more extreme than 4:1"),
    case("aspect-zero", imagine("a cat --ar 16:0"), "--ar must be W:H", "'16:0'"),
    case("aspect-ratio", imagine("a cat --ar 100:1"), "aspect 100:1 is more extreme than 4:1"),
    case(
        "aspect-option",
        imagine("a cat", aspect="1:1; DROP TABLE jobs"),
        "aspect must be W:H",
        "DROP TABLE",
    ),
    case(
        "aspect-and-size",
        imagine("a cat --ar 16:9 --size 512x512"),
        "an aspect ratio or a size, not both",
    ),
    # steps, guidance, seeds, counts
    case("steps-0", imagine("a cat --steps 0"), "steps must be between 1 and 60, got 0"),
    case("steps-1e9", imagine("a cat --steps 1000000000"), "between 1 and 60, got 1000000000"),
    case(
        "steps-5000-digits",
        imagine(f"a cat --steps {LONG_DIGITS}"),
        "--steps must be a whole number",
    ),
    case("steps-fraction", imagine("a cat --steps 2.5"), "--steps must be a whole number", "2.5"),
    case("steps-option", imagine("a cat", steps=61), "steps must be between 1 and 60, got 61"),
    case("steps-raw-0", raw_command("imagine", prompt="a cat", steps=0), "between 1 and 60, got 0"),
    case("guidance-nan", imagine("a cat --cfg nan"), "guidance must be a finite number", "got nan"),
    case("guidance-inf", imagine("a cat --cfg inf"), "guidance must be a finite number", "got inf"),
    case("guidance-minus-inf", imagine("a cat --cfg -inf"), "finite number", "got -inf"),
    case("guidance-overflow", imagine("a cat --cfg 1e309"), "finite number", "got inf"),
    case("guidance-31", imagine("a cat --cfg 31"), "between 0 and 30, got 31"),
    case(
        "guidance-raw-nan",
        raw_command("imagine", prompt="a cat", guidance=float("nan")),
        "guidance must be a finite number",
        "got nan",
    ),
    case(
        "seed-minus-1",
        imagine("a cat --seed -1"),
        "--seed must be a whole number between 0",
        "'-1'",
    ),
    case("seed-2-32", imagine("a cat --seed 4294967296"), "4294967295", "'4294967296'"),
    case("seed-hex", imagine("a cat --seed 0x10"), "--seed must be a whole number", "'0x10'"),
    case(
        "seed-raw-minus-1",
        raw_command("imagine", prompt="a cat", seed=-1),
        "seed must be a whole number between 0 and 4294967295, got -1",
    ),
    case("count-0", imagine("a cat --n 0"), "count must be between 1 and 4, got 0"),
    case("count-5", imagine("a cat --n 5"), "count must be between 1 and 4, got 5"),
    case(
        "count-raw-100",
        raw_command("imagine", prompt="a cat", count=100),
        "count must be between 1 and 4, got 100",
    ),
    case("strength-0", imagine("a cat --strength 0"), "strength must be more than 0", "got 0"),
    # flags
    case("unknown-flag", imagine("a cat --foo bar"), "unknown flag --foo", "known flags"),
    case(
        "misspelt-flag", imagine("a cat --stepz 3"), "unknown flag --stepz", "did you mean --steps"
    ),
    case("flag-without-value", imagine("a cat --steps"), "--steps needs a value"),
    case("empty-no", imagine("a cat --no"), "--no needs a value"),
    case("flag-twice", imagine("a cat --seed 1 --seed 2"), "--seed is given twice"),
    case(
        "flag-equals-garbage",
        imagine("a cat --steps=ten"),
        "--steps must be a whole number",
        "'ten'",
    ),
    case("sampler-shell", imagine("a cat --sampler rm -rf /"), "scheduler must be one of", "'rm'"),
    # models
    case(
        "model-path-flag",
        imagine("a cat --model ../../etc/passwd"),
        "model must be one of tiny",
        "'../../etc/passwd'",
    ),
    case(
        "model-path-option",
        imagine("a cat", model="/root/models/evil.ckpt"),
        "model must be one of tiny",
        "'/root/models/evil.ckpt'",
    ),
    case(
        "model-windows-path",
        imagine("a cat", model="C:\\models\\x.safetensors"),
        "model must be one of tiny",
    ),
    case(
        "model-sql",
        imagine("a cat --model x');DROP_TABLE_jobs;--"),
        "model must be one of",
        "DROP_TABLE",
    ),
    # SQL metacharacters where they break a rule (in prose they are just text: see test_security)
    case("seed-sql", imagine("a cat --seed 1;DROP"), "--seed must be a whole number", "'1;DROP'"),
    case("steps-sql", imagine("a cat --steps 1' OR '1'='1"), "--steps must be a whole number"),
    # attachments
    case(
        "not-an-image",
        upload(b"#!/bin/sh\nrm -rf /\n", "run.sh", "text/x-sh"),
        "the attachment must be an image",
        "text/x-sh",
    ),
    case(
        "fake-png",
        upload(b"MZ\x90\x00" + b"\0" * 1000, "cat.png", "image/png"),
        "not a readable image",
        "sdbot reads PNG, JPEG",
    ),
    case("truncated-png", upload(truncated_png(), "cut.png", "image/png"), "not a readable image"),
    case(
        "fifty-megabytes",
        upload(fifty_megabytes(), "huge.png", "image/png"),
        "the image is 50.0 MiB",
        "limit is 20 MiB",
    ),
    case(
        "decompression-bomb",
        upload(png_header_only(65535, 65535), "bomb.png", "image/png"),
        "decompression bomb",
    ),
    case(
        "64-megapixels",
        upload(png_header_only(8000, 8000), "big.png", "image/png"),
        "40000000 pixels",
        "got 8000x8000",
    ),
    case(
        "one-pixel", upload(png_header_only(1, 1), "dot.png", "image/png"), "between 8x8", "got 1x1"
    ),
    case(
        "tiff",
        upload(encoded(64, 64, "TIFF"), "scan.tiff", "image/tiff"),
        "image format must be one of",
        "got TIFF",
    ),
    case(
        "extreme-image",
        upload(encoded(1000, 64, "PNG"), "strip.png", "image/png"),
        "1000x64, more extreme than 4:1",
    ),
    # buttons with tampered custom_ids, other members' jobs
    case(
        "cancel-others-job",
        click("sdbot:cancel:{w.bob_running}:0", on="bob_progress"),
        "is not yours",
        "only your own jobs",
    ),
    case("forged-cancel", forged_click("sdbot:cancel:{w.bob_running}:0"), "is not yours"),
    case(
        "delete-others-result",
        click("sdbot:delete:{w.bob_job}:0", on="bob_result"),
        "only the member who asked for it, or moderators, can delete this",
    ),
    case(
        "share-others-result",
        click("sdbot:share:{w.bob_job}:0", on="bob_result"),
        "only the member who asked for it can share this",
    ),
    case("unknown-job", forged_click("sdbot:upscale:999999:0"), "job 999999 does not exist"),
    case(
        "huge-job-id",
        forged_click("sdbot:upscale:9999999999999999999:0"),
        "job 9999999999999999999 does not exist",
    ),
    case(
        "image-out-of-range",
        forged_click("sdbot:upscale:{w.alice_job}:7"),
        "has 2 image(s); there is no image 8",
    ),
    case("unknown-action", forged_click("sdbot:nuke:{w.alice_job}:0"), "malformed"),
    case("sql-custom-id", forged_click("sdbot:reroll:1;DROP TABLE jobs:0"), "malformed"),
    case("long-custom-id", forged_click("sdbot:" + "9" * 94), "malformed"),
    case(
        "others-history",
        forged_click("sdbot:hist:{w.bob_result.author.id}:1"),
        "someone else's history",
    ),
    case(
        "upscale-unfinished",
        forged_click("sdbot:upscale:{w.bob_running}:0"),
        "wait until it is done",
    ),
    # the remix modal
    case("remix-steps", remix("a barn --steps 1000000000"), "between 1 and 60, got 1000000000"),
    case("remix-size", remix("a barn --size 13x13"), "width must be a multiple of 8", "got 13"),
    case("remix-model-path", remix("a barn --model ../../etc/shadow"), "model must be one of"),
    case("remix-unknown-flag", remix("a barn --exec rm"), "unknown flag --exec"),
    case("remix-control", remix("a barn\x07"), "control character U+0007"),
    case(
        "remix-negative-control",
        remix("a barn", negative="ugly\x1b"),
        "negative prompt contains the control character U+001B",
    ),
    case("remix-empty", remix("\u200b --seed 4"), "prompt is empty"),
    # other commands
    case("show-unknown", command("show", job=424242), "job 424242 does not exist"),
    case("show-huge-raw", raw_command("show", job=2**63), f"job {2**63} does not exist"),
    case("cancel-others", command("cancel", job=lambda w: w.bob_running), "is not yours"),
    case("cancel-unknown", command("cancel", job=777777), "job 777777 does not exist"),
    case("history-page-raw", raw_command("history", page=2**62), "page"),
    case(
        "settings-steps",
        command("settings", steps=500),
        "steps must be between 1 and 60",
        "got 500",
    ),
    case(
        "settings-aspect",
        command("settings", aspect="1:1'; DROP TABLE user_defaults;--"),
        "aspect must look like 16:9",
    ),
    case(
        "settings-model-path",
        command("settings", model="../../../etc/passwd"),
        "model must be one of tiny",
    ),
    case(
        "config-without-manage-server",
        raw_command("config limits", images_per_hour=1),
        "/config needs the Manage Server permission",
    ),
    case(
        "config-channel-without-manage-server",
        raw_command("config banned-words", add="cat"),
        "/config needs the Manage Server permission",
    ),
]


async def answer(w: World, record: InteractionRecord) -> str:
    """The text of the bot's answer to `record` (after a defer: the edited or followup text)."""
    await record.wait_response(timeout=15)
    if record.deferred:
        await record.wait_message(lambda m: not m.loading, timeout=15)
    message = record.followups[-1] if record.followups else record.message
    assert message is not None, "the bot answered with no message"
    assert message.ephemeral, f"the answer is not ephemeral: {message.content!r}"
    return message.content


@pytest.mark.parametrize("hostile", CASES)
async def test_hostile_input_is_refused_clearly_and_writes_nothing(
    world: World, hostile: Case
) -> None:
    before = row_counts(world.db_path)
    running_before = jobs(world.db_path)[world.bob_running]["state"]
    record = await hostile.act(world)
    text = await answer(world, record)
    for fragment in hostile.expect:
        assert fragment in text, f"{hostile.name}: {fragment!r} not in {text!r}"
    assert "something went wrong" not in text
    await asyncio.sleep(0.05)  # anything the bot would write after answering
    assert row_counts(world.db_path) == before, f"{hostile.name} wrote to the database"
    assert jobs(world.db_path)[world.bob_running]["state"] == running_before
    assert not world.alice_result.deleted and not world.bob_result.deleted
