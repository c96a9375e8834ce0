"""Result buttons and the remix modal. All state is in the custom_id and in SQLite,
so every button works after a restart (`DynamicItem` + `Client.add_dynamic_items`)."""

from __future__ import annotations

import dataclasses
import random
import re
from typing import TYPE_CHECKING, Any

import discord

from bot.errors import Refused, reply_error
from bot.launch import launch, requester
from bot.service import Lineage
from generation.errors import InvalidRequest
from generation.request import GenerationRequest, Kind, Limits, RequestOptions
from generation.validation import build_request
from storage.records import Action, JobRecord, JobState

if TYPE_CHECKING:
    from bot.client import SdBot

UPSCALE_STRENGTH = 0.3
VARIATION_STRENGTH = 0.6
ACTIONS = ("upscale", "vary", "reroll", "remix", "delete", "share", "cancel")
_PARSE = re.compile(r"^(?P<action>[a-z]{1,10}):(?P<job>[0-9]{1,19}):(?P<index>[0-9]{1,2})$")


def _bot(interaction: discord.Interaction) -> SdBot:
    return interaction.client  # type: ignore[return-value]


class ResultButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"sdbot:(?!hist:)(?P<rest>.{0,94})",
):
    """Every `sdbot:<action>:<job>:<index>` button, however old its message."""

    def __init__(self, rest: str) -> None:
        super().__init__(discord.ui.Button(label="…", custom_id=f"sdbot:{rest}"))
        self.rest = rest

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ResultButton:
        return cls(match["rest"])

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await self._handle(interaction)
        except Exception as exc:
            await reply_error(interaction, exc)

    async def _handle(self, interaction: discord.Interaction) -> None:
        match = _PARSE.match(self.rest)
        if match is None or match["action"] not in ACTIONS:
            raise Refused("this button is not one of sdbot's (its id is malformed)")
        action, job_id, index = match["action"], int(match["job"]), int(match["index"])
        record = await _bot(interaction).storage.jobs.get(job_id)
        handler = {
            "upscale": upscale,
            "vary": vary,
            "reroll": reroll,
            "remix": remix,
            "delete": delete,
            "share": share,
            "cancel": cancel,
        }[action]
        await handler(interaction, record, index)


def _request(record: JobRecord) -> GenerationRequest:
    return GenerationRequest.from_dict(record.request, record.init_image)


def _check_done(record: JobRecord, index: int) -> GenerationRequest:
    if record.state is not JobState.DONE:
        raise Refused(f"job #{record.id} is {record.state.value}; wait until it is done")
    request = _request(record)
    if not 0 <= index < len(record.seeds):
        raise Refused(
            f"job #{record.id} has {len(record.seeds)} image(s); there is no image {index + 1}"
        )
    return request


async def _current_limits(interaction: discord.Interaction) -> Limits:
    """The limits that apply here now: the bot's, narrowed by this server's /config."""
    bot = _bot(interaction)
    return bot.service.limits_for(await bot.service.guild_config(interaction.guild_id))


def _as_options(request: GenerationRequest) -> RequestOptions:
    """Every setting of `request` given explicitly, so that `build_request` keeps each one
    and checks it again."""
    return RequestOptions(
        negative_prompt=request.negative_prompt,
        width=request.width,
        height=request.height,
        steps=request.steps,
        guidance=request.guidance,
        seed=request.seed,
        count=request.count,
        model=request.model,
        scheduler=request.scheduler,
        strength=request.strength if request.kind.needs_image else None,
    )


def _validated(
    prompt: str, options: RequestOptions, parent: GenerationRequest, limits: Limits, bot: SdBot
) -> GenerationRequest:
    """A request made from a stored job, through the same `build_request` as /imagine."""
    return build_request(
        prompt,
        options,
        defaults=RequestOptions(),  # the job's settings, never the clicker's saved ones
        registry=bot.registry,
        limits=limits,
        kind=parent.kind,
        init_image=parent.init_image,
        init_size=(parent.width, parent.height),
    )


def _recheck(
    interaction: discord.Interaction,
    record: JobRecord,
    request: GenerationRequest,
    limits: Limits,
    *,
    why: str = "start a new /imagine",
) -> GenerationRequest:
    """`request`, job `record`'s with the button's changes, checked against the rules that
    hold now: since the job was made, an admin may have lowered the server's max steps
    (/config limits) and the bot's owner may have removed its model or changed a limit.
    A refusal names the rule, then `why`: what it means for the member.
    Nothing is recorded or reserved before this passes."""
    try:
        return _validated(request.prompt, _as_options(request), request, limits, _bot(interaction))
    except InvalidRequest as exc:
        raise InvalidRequest(
            exc.rule,
            f"{exc} (this button repeats job #{record.id}'s settings, which are no longer "
            f"allowed here; {why})",
        ) from exc


def _upscaled_size(parent: GenerationRequest, limits: Limits) -> tuple[int, int]:
    """The size an upscale of `parent` makes: twice each side, within the pixel limit.

    /imagine's side rule (`generation.validation.MAX_SIDE`, 2048) bounds the sizes a member
    types or an aspect picks for a new image. Nobody picks an upscale's size: it doubles an
    image the bot made, so it answers only to what the pipeline really needs. That is the
    admin's pixel limit (GPU memory and time grow with the pixels, not with one side) and
    sides in multiples of 8 (the VAE's factor), which twice a valid size always is; the
    ratio stays the parent's.
    """
    width, height = parent.width * 2, parent.height * 2
    if width * height > limits.max_pixels:
        raise Refused(
            f"the upscaled image would be {width}x{height} ({width * height:,} pixels); "
            f"this bot's limit is {limits.max_pixels:,} pixels, so this image cannot be "
            "upscaled here"
        )
    return width, height


async def upscale(interaction: discord.Interaction, record: JobRecord, index: int) -> None:
    parent = _check_done(record, index)
    limits = await _current_limits(interaction)
    width, height = _upscaled_size(parent, limits)
    image = await _bot(interaction).storage.images.read(record.id, index)
    request = parent.with_changes(
        kind=Kind.UPSCALE,
        count=1,  # within any count limit
        seed=record.seeds[index],
        strength=UPSCALE_STRENGTH,
        init_image=image,
    )
    # Every other setting is the parent's and must fit the rules of now (the admin's max
    # steps is per request, whatever it is). The size is checked as the parent's, which
    # /imagine made; the upscaled size had its own check above.
    request = _recheck(
        interaction, record, request, limits, why=f"its image {index + 1} cannot be upscaled"
    )
    request = request.with_changes(width=width, height=height)
    await launch(interaction, request, Lineage(Action.UPSCALE, record.id, index))


async def vary(interaction: discord.Interaction, record: JobRecord, index: int) -> None:
    parent = _check_done(record, index)
    limits = await _current_limits(interaction)
    image = await _bot(interaction).storage.images.read(record.id, index)
    request = parent.with_changes(
        kind=Kind.VARIATION,
        seed=random.randrange(2**32),
        strength=VARIATION_STRENGTH,
        init_image=image,
    )
    request = _recheck(interaction, record, request, limits)
    await launch(interaction, request, Lineage(Action.VARIATION, record.id, index))


async def reroll(interaction: discord.Interaction, record: JobRecord, index: int) -> None:
    request = _request(record).with_changes(seed=random.randrange(2**32))
    if request.kind.needs_image and request.init_image is None:
        raise Refused(f"job #{record.id}'s input image has expired; start a new /imagine")
    request = _recheck(interaction, record, request, await _current_limits(interaction))
    await launch(interaction, request, Lineage(Action.REROLL, record.id))


async def remix(interaction: discord.Interaction, record: JobRecord, index: int) -> None:
    form = RemixModal(record)
    await interaction.response.send_modal(form)
    # Submissions go to `submit_remix` (from SdBot.on_interaction), not to this object:
    # discord.py keeps one modal per custom_id in memory, which a restart forgets and a
    # second member remixing the same job replaces.
    form.stop()


async def delete(interaction: discord.Interaction, record: JobRecord, index: int) -> None:
    who = requester(interaction)
    if record.user_id != who.user_id and not who.manage_messages:
        raise Refused("only the member who asked for it, or moderators, can delete this")
    await interaction.response.defer()
    if interaction.message is not None:
        await interaction.message.delete()
    # The images go too: /show and Share must not bring back what was deleted.
    await _bot(interaction).storage.images.delete_job_images(record.id)


async def share(interaction: discord.Interaction, record: JobRecord, index: int) -> None:
    bot = _bot(interaction)
    if record.user_id != interaction.user.id:
        raise Refused("only the member who asked for it can share this")
    _check_done(record, 0)
    config = await bot.service.guild_config(interaction.guild_id)
    if config is None or config.showcase_channel_id is None:
        raise Refused(
            "this server has no showcase channel; an admin can set one with /config showcase"
        )
    await interaction.response.defer(ephemeral=True, thinking=True)
    outgoing = await bot.delivery.compose(record, destination=config.showcase_channel_id)
    if outgoing.file_bytes is None:
        raise Refused("there is nothing to share: the safety checker flagged every image")
    channel = bot.get_partial_messageable(config.showcase_channel_id)
    prompt = str(record.request.get("prompt", ""))[:1500]
    try:
        await channel.send(
            content=f"⭐ by <@{record.user_id}>: {prompt}",
            embed=outgoing.embed,
            files=outgoing.files(),
            allowed_mentions=discord.AllowedMentions.none(),
        )
    except (discord.Forbidden, discord.NotFound) as exc:
        raise Refused(
            f"I cannot post in the showcase channel <#{config.showcase_channel_id}> "
            f"({exc.text or exc.status}); an admin can check my permission there "
            "or pick another with /config showcase"
        ) from exc
    await interaction.followup.send(f"Shared to <#{config.showcase_channel_id}>.", ephemeral=True)


async def cancel(interaction: discord.Interaction, record: JobRecord, index: int) -> None:
    await _bot(interaction).service.cancel(record.id, requester(interaction))
    await interaction.response.send_message(f"🛑 job #{record.id} cancelled", ephemeral=True)


class RemixModal(discord.ui.Modal, title="Remix"):
    """The form: the prompt prefilled; the new text may carry inline flags (validated as
    usual). What is submitted is handled by `submit_remix`."""

    def __init__(self, record: JobRecord) -> None:
        super().__init__(custom_id=f"sdbot-remix:{record.id}", timeout=900)
        self.record = record
        request = _request(record)
        self.prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Prompt",
            style=discord.TextStyle.paragraph,
            default=request.prompt[:1500],
            max_length=1500,
            custom_id="prompt",
        )
        self.negative: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Negative prompt",
            style=discord.TextStyle.paragraph,
            required=False,
            default=request.negative_prompt[:1500] or None,
            max_length=1500,
            custom_id="negative",
        )
        self.add_item(self.prompt)
        self.add_item(self.negative)


REMIX_FORM = re.compile(r"^sdbot-remix:(?P<job>[0-9]{1,19})$")


async def submit_remix(interaction: discord.Interaction) -> None:
    """A submitted remix form (other modals are left alone). Its custom_id names the job and
    its fields hold the text, so a form opened before a restart works, and so does each
    member's form for one job."""
    data: dict[str, Any] = dict(interaction.data or {})  # type: ignore[arg-type]
    match = REMIX_FORM.match(str(data.get("custom_id", "")))
    if match is None:
        return
    try:
        record = await _bot(interaction).storage.jobs.get(int(match["job"]))
        values = _form_values(data.get("components") or [])
        await _remix(interaction, record, values.get("prompt", ""), values.get("negative", ""))
    except Exception as exc:
        await reply_error(interaction, exc)


def _form_values(components: list[Any]) -> dict[str, str]:
    """`{custom_id: value}` of the text inputs in a modal submission (rows or labels)."""
    values: dict[str, str] = {}
    stack = list(components)
    while stack:
        component = stack.pop()
        if not isinstance(component, dict):
            continue
        stack += component.get("components") or []
        if isinstance(component.get("component"), dict):
            stack.append(component["component"])
        if component.get("custom_id") and isinstance(component.get("value"), str):
            values[component["custom_id"]] = component["value"]
    return values


async def _remix(
    interaction: discord.Interaction, record: JobRecord, prompt: str, negative: str
) -> None:
    parent = _request(record)
    # The parent's settings, a new seed; flags in the new prompt override any of them.
    options = dataclasses.replace(_as_options(parent), negative_prompt=negative, seed=None)
    limits = await _current_limits(interaction)
    request = _validated(prompt, options, parent, limits, _bot(interaction))
    await launch(interaction, request, Lineage(Action.REMIX, record.id))


class HistoryButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"sdbot:hist:(?P<user>[0-9]{1,19}):(?P<page>[0-9]{1,5})",
):
    """Pages of /history; only the member whose history it is may turn them."""

    def __init__(self, user_id: int, page: int) -> None:
        super().__init__(discord.ui.Button(label="page", custom_id=f"sdbot:hist:{user_id}:{page}"))
        self.user_id = user_id
        self.page = page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> HistoryButton:
        return cls(int(match["user"]), int(match["page"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        from bot.commands import history_page

        try:
            if interaction.user.id != self.user_id:
                raise Refused("this is someone else's history")
            embed, view = await history_page(_bot(interaction), self.user_id, max(1, self.page))
            await interaction.response.edit_message(embed=embed, view=view)
            view.stop()
        except Exception as exc:
            await reply_error(interaction, exc)


def register_history_buttons(client: discord.Client) -> None:
    client.add_dynamic_items(HistoryButton)
