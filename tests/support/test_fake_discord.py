"""The fake Discord against the real discord.py client: every rule the bot's tests rely on."""

from __future__ import annotations

import asyncio
import io
import re
import struct
import zlib
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.endpoints import DISCORD_API_URL, DISCORD_GATEWAY_URL, apply_endpoints
from tests.support.fake_discord import FakeDiscord, discord_endpoints, run_client


def tiny_png(width: int = 2, height: int = 1) -> bytes:
    """A valid RGB PNG, built without Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = tiny_png()


class CounterButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"mini:count:(?P<n>\d+)"
):
    """A button that survives restarts: its state lives in the custom_id."""

    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label=f"Count {n}", custom_id=f"mini:count:{n}"))
        self.n = n

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[discord.ui.View],
        match: re.Match[str],
    ) -> CounterButton:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        view = discord.ui.View(timeout=None)
        view.add_item(CounterButton(self.n + 1))
        await interaction.response.edit_message(content=f"count {self.n + 1}", view=view)


class RemixModal(discord.ui.Modal, title="Remix"):
    prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
        label="Prompt", custom_id="remix-prompt"
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"remix: {self.prompt.value}", ephemeral=True)


class StyleModal(discord.ui.Modal, title="Style"):
    """The discord.py 2.6+ layout: inputs inside labels (component type 18)."""

    style: discord.ui.Label[StyleModal] = discord.ui.Label(
        text="Style", component=discord.ui.TextInput(custom_id="style-text")
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        assert isinstance(self.style.component, discord.ui.TextInput)
        await interaction.response.send_message(f"style: {self.style.component.value}")


class SizeSelect(discord.ui.View):
    @discord.ui.select(
        custom_id="mini:size",
        options=[discord.SelectOption(label=s, value=s) for s in ("512", "768", "1024")],
    )
    async def size(
        self, interaction: discord.Interaction, select: discord.ui.Select[SizeSelect]
    ) -> None:
        await interaction.response.send_message(f"size {select.values[0]}", ephemeral=True)


MODELS = ["sd15", "sdxl", "sdxl-turbo"]


class MiniBot(discord.Client):
    """A minimal bot with one command per behaviour under test."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.caught: list[discord.HTTPException] = []
        self.release = asyncio.Event()
        self.seen_messages: list[discord.Message] = []
        self.resumed = asyncio.Event()
        self._add_commands()

    async def setup_hook(self) -> None:
        self.add_dynamic_items(CounterButton)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py sleeps 5 s before every IDENTIFY but the first; tests need not."""

    async def on_message(self, message: discord.Message) -> None:
        self.seen_messages.append(message)

    async def on_resumed(self) -> None:
        self.resumed.set()

    def _add_commands(self) -> None:
        tree = self.tree

        @tree.command(description="Make images")
        @app_commands.describe(prompt="What to draw")
        async def imagine(
            interaction: discord.Interaction,
            prompt: str,
            count: app_commands.Range[int, 1, 4] = 1,
            image: discord.Attachment | None = None,
        ) -> None:
            await interaction.response.defer()
            note = f" from {len(await image.read())} bytes" if image else ""
            file = discord.File(io.BytesIO(PNG), filename="grid.png")
            await interaction.followup.send(f"{prompt} x{count}{note}", file=file)

        @tree.command(description="A counter button")
        async def counter(interaction: discord.Interaction) -> None:
            view = discord.ui.View(timeout=None)
            view.add_item(CounterButton(0))
            await interaction.response.send_message("count 0", view=view)

        @tree.command(description="Open the remix modal")
        async def remix(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(RemixModal())

        @tree.command(description="Open the style modal")
        async def style(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(StyleModal())

        @tree.command(description="Pick a size")
        async def size(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pick", view=SizeSelect(timeout=None))

        @tree.command(description="Pick a model")
        async def model(interaction: discord.Interaction, name: str) -> None:
            await interaction.response.send_message(name)

        @model.autocomplete("name")
        async def model_names(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            return [app_commands.Choice(name=m, value=m) for m in MODELS if current in m]

        @tree.command(description="Answers too late")
        async def slow(interaction: discord.Interaction) -> None:
            await asyncio.sleep(3.5)
            try:
                await interaction.response.send_message("too late")
            except discord.HTTPException as exc:
                self.caught.append(exc)

        @tree.command(description="Defers, waits for the test, then follows up")
        async def later(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await self.release.wait()
            try:
                await interaction.followup.send("via webhook")
            except discord.HTTPException as exc:
                self.caught.append(exc)
                assert isinstance(interaction.channel, discord.TextChannel)
                await interaction.channel.send("via bot token")

        @tree.command(description="Defers publicly, then answers privately")
        async def private(interaction: discord.Interaction, retract: bool) -> None:
            await interaction.response.defer(thinking=True)
            if retract:
                await interaction.delete_original_response()
            await interaction.followup.send("only for you", ephemeral=True)

        @tree.command(description="Ephemeral pong")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong", ephemeral=True)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[MiniBot]:
    client = MiniBot()
    async with run_client(client, fake):
        guild = discord.Object(fake.guild.id)
        client.tree.copy_global_to(guild=guild)
        await client.tree.sync(guild=guild)
        await client.tree.sync()
        yield client


def text_channel(bot: MiniBot, fake: FakeDiscord, name: str) -> discord.TextChannel:
    channel = bot.get_channel(fake.channel(name).id)
    assert isinstance(channel, discord.TextChannel)
    return channel


# Endpoints


def test_apply_endpoints_validates_and_restores() -> None:
    with pytest.raises(ValueError, match="API URL must start with http:// or https://"):
        apply_endpoints("ftp://127.0.0.1/api/v10", None)
    with pytest.raises(ValueError, match="gateway URL must start with ws:// or wss://"):
        apply_endpoints(None, "http://127.0.0.1/gateway")
    with pytest.raises(ValueError, match="no host"):
        apply_endpoints("http:///api/v10", None)
    apply_endpoints("http://127.0.0.1:9/api/v10/", "ws://127.0.0.1:9/gateway")
    try:
        assert Route.BASE == "http://127.0.0.1:9/api/v10"
        assert str(DiscordWebSocket.DEFAULT_GATEWAY) == "ws://127.0.0.1:9/gateway"
    finally:
        apply_endpoints(None, None)
    assert Route.BASE == DISCORD_API_URL
    assert DiscordWebSocket.DEFAULT_GATEWAY == DISCORD_GATEWAY_URL


async def test_discord_endpoints_restores_originals(fake: FakeDiscord) -> None:
    with discord_endpoints(fake):
        assert Route("GET", "/users/@me").url == fake.api_url + "/users/@me"
    assert Route.BASE == DISCORD_API_URL


async def test_json_content_type_has_no_charset(fake: FakeDiscord) -> None:
    headers = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(fake.api_url + "/users/@me", headers=headers) as response:
            assert response.headers["Content-Type"] == "application/json"
        async with session.get(fake.api_url + "/users/@me") as response:
            assert response.status == 401


# Login, gateway, commands


async def test_login_ready_and_guild_available(fake: FakeDiscord, bot: MiniBot) -> None:
    assert bot.is_ready()
    assert bot.user is not None and bot.user.id == fake.bot_user.id
    guild = bot.get_guild(fake.guild.id)
    assert guild is not None and guild.me is not None
    nsfw = guild.get_channel(fake.channel("nsfw-art").id)
    assert isinstance(nsfw, discord.TextChannel) and nsfw.is_nsfw()
    assert bot.application_id == fake.application_id
    assert [r.path for r in fake.requests[:2]] == ["/users/@me", "/oauth2/applications/@me"]
    assert fake.unhandled_requests == []


async def test_tree_sync_registers_commands_with_typed_options(
    fake: FakeDiscord, bot: MiniBot
) -> None:
    imagine = fake.commands(fake.guild)["imagine"]
    options = {o["name"]: o for o in imagine["options"]}
    assert (options["prompt"]["type"], options["prompt"]["required"]) == (3, True)
    assert (options["count"]["type"], options["count"]["min_value"]) == (4, 1)
    assert options["image"]["type"] == 11
    assert "ping" in fake.commands()  # the global sync


async def test_gateway_disconnect_resumes_the_session(fake: FakeDiscord, bot: MiniBot) -> None:
    await fake.disconnect_gateway()
    await asyncio.wait_for(bot.resumed.wait(), 5)
    assert (fake.identify_count, fake.resume_count) == (1, 1)
    record = await fake.slash("alice", "general", "ping")
    await record.wait_response()
    assert record.content == "pong" and record.ephemeral


async def test_resume_stays_on_the_configured_gateway(fake: FakeDiscord) -> None:
    # Discord's READY names a regional resume URL; with an override, discord.py must not use it.
    fake.resume_gateway_url = "ws://127.0.0.1:9/elsewhere"
    client = MiniBot()
    async with run_client(client, fake):
        await fake.disconnect_gateway()
        await asyncio.wait_for(client.resumed.wait(), 5)
    assert fake.resume_count == 1


async def test_events_sent_while_disconnected_are_replayed_on_resume(
    fake: FakeDiscord, bot: MiniBot
) -> None:
    await fake.disconnect_gateway()
    record = await fake.slash("alice", "general", "ping")
    await record.wait_response()
    assert fake.resume_count == 1
    # The client RESUMEd from a sequence number before the interaction: it was replayed.
    resume = next(f for f in fake.gateway_frames if f["op"] == 6)
    session = next(iter(fake.state.gateway.sessions.values()))
    sent = next(f for f in session.sent if f["t"] == "INTERACTION_CREATE")
    assert resume["d"]["seq"] < sent["s"]


async def test_invalidated_session_identifies_again(fake: FakeDiscord, bot: MiniBot) -> None:
    await fake.invalidate_session()
    await fake.wait_until(lambda: fake.identify_count == 2 and fake.gateway_connected)
    record = await fake.slash("alice", "general", "ping")
    await record.wait_response()


async def test_arbitrary_gateway_event(fake: FakeDiscord, bot: MiniBot) -> None:
    created = asyncio.ensure_future(bot.wait_for("guild_role_create", timeout=5))
    role = {"id": "42", "name": "Painters", "permissions": "0", "position": 9}
    await fake.dispatch("GUILD_ROLE_CREATE", {"guild_id": str(fake.guild.id), "role": role})
    assert (await created).name == "Painters"


# Interactions


async def test_slash_defer_then_followup_with_file(fake: FakeDiscord, bot: MiniBot) -> None:
    record = await fake.slash("alice", "art", "imagine", {"prompt": "a cat", "count": 2})
    await record.wait_response()
    assert record.response_type == 5 and record.deferred
    message = await record.wait_followup()
    # After a defer, Discord's first followup replaces the "thinking" message.
    assert message is record.message and not message.loading
    assert message.content == "a cat x2"
    assert message.attachments[0].filename == "grid.png"
    assert message.file() == PNG and message.attachments[0].image_size() == (2, 1)
    assert fake.messages("art") == [message]


async def test_first_followup_after_a_defer_keeps_its_visibility_unless_deleted(
    fake: FakeDiscord, bot: MiniBot
) -> None:
    kept = await fake.slash("alice", "art", "private", {"retract": False})
    replaced = await kept.wait_followup()
    # The ephemeral flag is ignored: the public "thinking" message is edited in place.
    assert replaced is kept.message and not replaced.ephemeral and not replaced.deleted

    retracted = await fake.slash("alice", "art", "private", {"retract": True})
    answer = await retracted.wait_followup()
    assert retracted.message is not None and retracted.message.deleted
    assert answer is not retracted.message and answer.ephemeral
    assert answer.content == "only for you" and not retracted.errors
    assert retracted.message.content == "" and not retracted.message.edits


async def test_a_thinking_message_a_moderator_deleted_is_gone_for_the_token(
    fake: FakeDiscord, bot: MiniBot
) -> None:
    record = await fake.slash("alice", "art", "later")
    await record.wait_response()
    thinking = record.message
    assert thinking is not None and thinking.loading
    await fake.delete_message(thinking)
    assert thinking.deleted and fake.messages("art") == []
    url = f"{fake.api_url}/webhooks/{fake.application_id}/{record.token}/messages/@original"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 404 and (await response.json())["code"] == 10008
    bot.release.set()
    answer = await record.wait_followup()
    assert answer is not thinking and answer.content == "via webhook" and not bot.caught


async def test_slash_attachment_option_is_downloadable(fake: FakeDiscord, bot: MiniBot) -> None:
    upload = fake.upload(b"x" * 300, "input.png")
    record = await fake.slash(
        "bob", "art", "imagine", {"prompt": "variation"}, attachments={"image": upload}
    )
    message = await record.wait_followup()
    assert message.content == "variation x1 from 300 bytes"


async def test_slash_rejects_options_discord_would_refuse(fake: FakeDiscord, bot: MiniBot) -> None:
    with pytest.raises(ValueError, match="requires option"):
        await fake.slash("alice", "art", "imagine", {"count": 2})
    with pytest.raises(ValueError, match=r"takes 1\.\.4"):
        await fake.slash("alice", "art", "imagine", {"prompt": "x", "count": 9})
    with pytest.raises(LookupError, match="not registered"):
        await fake.slash("alice", "art", "nosuchcommand")


async def test_button_click_on_dynamic_item_edits_message(fake: FakeDiscord, bot: MiniBot) -> None:
    record = await fake.slash("alice", "general", "counter")
    message = await record.wait_message()
    assert message.custom_ids == ["mini:count:0"]
    click = await fake.click("bob", message, "mini:count:0")
    await click.wait_response()
    assert click.response_type == 7 and click.message is message
    assert message.content == "count 1" and message.custom_ids == ["mini:count:1"]
    assert [v.content for v in message.versions] == ["count 0", "count 1"]
    with pytest.raises(LookupError):
        await fake.click("bob", message, "mini:count:0")


async def test_modal_round_trip(fake: FakeDiscord, bot: MiniBot) -> None:
    opened = await fake.slash("alice", "general", "remix")
    await opened.wait_response()
    assert opened.response_type == 9 and opened.modal is not None
    submitted = await fake.submit_modal("alice", opened, values={"remix-prompt": "a dog"})
    await submitted.wait_response()
    assert submitted.content == "remix: a dog" and submitted.ephemeral


async def test_modal_with_labels_round_trip(fake: FakeDiscord, bot: MiniBot) -> None:
    opened = await fake.slash("alice", "general", "style")
    await opened.wait_response()
    assert opened.modal is not None and opened.modal["components"][0]["type"] == 18
    submitted = await fake.submit_modal("alice", opened, values={"style-text": "ink"})
    await submitted.wait_response()
    assert submitted.content == "style: ink"


async def test_select_menu(fake: FakeDiscord, bot: MiniBot) -> None:
    record = await fake.slash("alice", "general", "size")
    message = await record.wait_message()
    with pytest.raises(ValueError, match="not options"):
        await fake.select("alice", message, "mini:size", ["2048"])
    picked = await fake.select("alice", message, "mini:size", ["768"])
    await picked.wait_response()
    assert picked.content == "size 768" and picked.ephemeral


async def test_autocomplete(fake: FakeDiscord, bot: MiniBot) -> None:
    record = await fake.autocomplete("alice", "general", "model", {"name": "sdxl"}, "name")
    await record.wait_response()
    assert record.response_type == 8
    assert [c["value"] for c in record.choices or []] == ["sdxl", "sdxl-turbo"]


async def test_dm_slash_command_has_user_and_no_guild(fake: FakeDiscord, bot: MiniBot) -> None:
    record = await fake.slash("alice", fake.dm_channel("alice"), "ping")
    await record.wait_response()
    assert "user" in record.payload and "guild_id" not in record.payload
    assert record.content == "pong"


# Discord's rules


async def test_callback_after_three_seconds_is_unknown_interaction(
    fake: FakeDiscord, bot: MiniBot
) -> None:
    record = await fake.slash("alice", "general", "slow")
    error = await record.wait_error(timeout=6)
    assert (error.status, error.code) == (404, 10062)
    await fake.wait_until(lambda: bot.caught, what="the bot to see the error")
    assert isinstance(bot.caught[0], discord.NotFound) and bot.caught[0].code == 10062
    assert record.response_type is None


async def test_second_callback_is_already_acknowledged(fake: FakeDiscord, bot: MiniBot) -> None:
    record = await fake.slash("alice", "general", "ping")
    await record.wait_response()
    url = f"{fake.api_url}/interactions/{record.id}/{record.token}/callback"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"type": 4, "data": {"content": "again"}}) as response:
            body = await response.json()
    assert (response.status, body["code"]) == (400, 40060)


async def test_expired_token_fails_followups_but_bot_token_still_works(
    fake: FakeDiscord, bot: MiniBot
) -> None:
    record = await fake.slash("alice", "general", "later")
    await record.wait_response()
    fake.advance(15 * 60 + 1)
    bot.release.set()
    delivered = await fake.wait_for_message(lambda m: m.content == "via bot token")
    assert bot.caught[0].status == 401 and bot.caught[0].code == 50027
    assert record.errors[0].code == 50027
    assert delivered.channel_id == fake.channel("general").id and delivered.webhook_id is None


async def test_rate_limited_followup_is_retried(fake: FakeDiscord, bot: MiniBot) -> None:
    fault = fake.fail_next("POST /webhooks/", status=429)
    record = await fake.slash("alice", "art", "imagine", {"prompt": "retry"})
    await record.wait_followup()
    assert [r.status for r in fake.requests_to("POST /webhooks/")] == [429, 200]
    assert fault.times == 0 and fault.hits[0].injected


async def test_server_error_on_edit_is_retried(fake: FakeDiscord, bot: MiniBot) -> None:
    channel = text_channel(bot, fake, "general")
    sent = await channel.send("v1")
    fake.fail_next(r"PATCH /channels/\d+/messages/", status=500)
    await sent.edit(content="v2")
    statuses = [r.status for r in fake.requests_to("PATCH /channels/")]
    assert statuses == [500, 200]
    stored = fake.message(sent.id)
    assert stored.content == "v2" and len(stored.edits) == 1


async def test_channel_message_via_bot_token(fake: FakeDiscord, bot: MiniBot) -> None:
    channel = text_channel(bot, fake, "showcase")
    file = discord.File(io.BytesIO(PNG), filename="share.png")
    sent = await channel.send("shared", file=file)
    stored = fake.messages("showcase")[0]
    assert stored.id == sent.id and stored.author.id == fake.bot_user.id
    assert stored.file() == PNG
    assert await sent.attachments[0].read() == PNG
    await fake.wait_until(lambda: any(m.id == sent.id for m in bot.seen_messages))
    await sent.delete()
    assert fake.messages("showcase") == [] and stored.deleted


async def test_forbidden_and_unknown_channels(fake: FakeDiscord, bot: MiniBot) -> None:
    await fake.forbid_channel("art")
    with pytest.raises(discord.Forbidden) as forbidden:
        await text_channel(bot, fake, "art").send("hi")
    assert forbidden.value.code == 50013
    with pytest.raises(discord.NotFound) as unknown:
        await bot.http.send_message(1234, params=discord.http.handle_message_parameters("x"))
    assert unknown.value.code == 10003


async def test_component_limits_are_enforced(fake: FakeDiscord, bot: MiniBot) -> None:
    buttons = [{"type": 2, "style": 1, "label": "b", "custom_id": f"b{i}"} for i in range(6)]
    too_wide = {"content": "x", "components": [{"type": 1, "components": buttons}]}
    route = Route("POST", "/channels/{channel_id}/messages", channel_id=fake.channel("art").id)
    with pytest.raises(discord.HTTPException) as wide:
        await bot.http.request(route, json=too_wide)
    assert wide.value.code == 50035 and "components.0.components" in wide.value.text
    long_id = {"type": 2, "style": 1, "label": "b", "custom_id": "x" * 101}
    bad_id = {"content": "x", "components": [{"type": 1, "components": [long_id]}]}
    with pytest.raises(discord.HTTPException) as long:
        await bot.http.request(route, json=bad_id)
    assert "custom_id" in long.value.text


async def test_oversized_attachment_is_413(fake: FakeDiscord, bot: MiniBot) -> None:
    fake.attachment_size_limit = 1024
    file = discord.File(io.BytesIO(b"x" * 2048), filename="big.png")
    with pytest.raises(discord.HTTPException) as too_big:
        await text_channel(bot, fake, "art").send(file=file)
    assert (too_big.value.status, too_big.value.code) == (413, 40005)


async def test_direct_messages_and_blocked_dms(fake: FakeDiscord, bot: MiniBot) -> None:
    alice = await bot.fetch_user(fake.user("alice").id)
    await alice.send("your image is ready")
    assert [m.content for m in fake.dm_messages("alice")] == ["your image is ready"]
    fake.block_dms("bob")
    bob = await bot.fetch_user(fake.user("bob").id)
    with pytest.raises(discord.Forbidden) as blocked:
        await bob.send("hello")
    assert blocked.value.code == 50007
