"""Following a job from the queue to the finished message.

One task per job: throttled edits of the progress message (queue position and
ETA, then a step bar with previews), then the final grid with its embed and
buttons. The interaction token edits messages for 15 minutes; after that (or
after a restart) results go out as ordinary channel messages with the bot token.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import discord

from bot import render
from generation.errors import JobCancelled, JobFailed, WorkerStopped
from generation.jobs import JobResult, Phase
from generation.output import fit_under, make_grid
from generation.request import GenerationRequest
from generation.worker import JobHandle
from storage import Storage
from storage.errors import StorageError
from storage.guilds import NsfwPolicy
from storage.records import JobRecord, JobState

log = logging.getLogger(__name__)

TOKEN_MARGIN = 60  # stop using a token this long before Discord does
DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024
# Waits before posting a result again after a server error discord.py did not retry
# (it retries 500/502/504 itself, but not 503 or a 429 without `Via`).
POST_RETRY_DELAYS = (1.0, 3.0, 10.0)


@dataclass(frozen=True)
class Outgoing:
    """A finished job's message: text, embed, one file (or none) and the buttons."""

    content: str
    embed: discord.Embed
    file_bytes: bytes | None
    filename: str
    count: int

    def files(self) -> list[discord.File]:
        if self.file_bytes is None:
            return []
        return [discord.File(io.BytesIO(self.file_bytes), filename=self.filename)]


class Delivery:
    """Posts progress and results for jobs; one task per job."""

    def __init__(
        self,
        client: discord.Client,
        storage: Storage,
        *,
        progress_interval: float = 1.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.storage = storage
        self.progress_interval = progress_interval
        self.clock = clock
        self.attachment_limits: dict[int, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._following: set[int] = set()  # job ids a task is seeing through

    def follow(
        self,
        record: JobRecord,
        handle: JobHandle,
        request: GenerationRequest,
        shown: str | None = None,
    ) -> None:
        """Follow the job to its result; `shown` is the progress text already on screen."""
        self._following.add(record.id)
        task = asyncio.create_task(
            self._follow(record, handle, request, shown), name=f"job-{record.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("following %s failed", task.get_name(), exc_info=task.exception())

    async def wait_idle(self) -> None:
        """Wait for every delivery task (used at shutdown and in tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- the job's life ---------------------------------------------------------------

    async def _follow(
        self,
        record: JobRecord,
        handle: JobHandle,
        request: GenerationRequest,
        shown: str | None = None,
    ) -> None:
        try:
            await self._see_through(record, handle, request, shown)
        finally:
            self.attachment_limits.pop(record.id, None)
            self._following.discard(record.id)

    async def sweep(self) -> int:
        """Post done results never delivered (a crash, or a Discord outage that outlasted
        the retries), except those a task is still seeing through. How many went out."""
        posted = 0
        for record in await self.storage.jobs.undelivered():
            if record.id in self._following:
                continue
            log.info("posting the undelivered result of job %s", record.id)
            try:
                await self.deliver(record)
                posted += 1
            except Exception as exc:  # one bad job must not stop the others
                log.exception("could not post the result of job %s", record.id)
                if isinstance(exc, StorageError):  # its images are gone: say so, stop trying
                    await self.storage.jobs.mark_undeliverable(record.id, str(exc))
        return posted

    async def _see_through(
        self,
        record: JobRecord,
        handle: JobHandle,
        request: GenerationRequest,
        shown: str | None,
    ) -> None:
        progress_task = asyncio.create_task(self._show_progress(record, handle, request, shown))
        try:
            result = await handle.result
        except WorkerStopped:  # stays queued in storage: the next start runs it again
            text = f"**#{record.id}** ⏸ sdbot is restarting; this job stays queued and runs after."
            if (
                await self.storage.jobs.get(record.id, with_image=False)
            ).state is JobState.CANCELLED:
                text = f"**#{record.id}** cancelled."
            await self._edit_progress(record, text, clear=True)
            return
        except JobCancelled:
            await self.storage.jobs.cancel(record.id)
            await self.storage.limits.refund_job(record.id)
            await self._edit_progress(record, f"**#{record.id}** cancelled.", clear=True)
            return
        except Exception as exc:  # JobFailed, or anything the worker passed on
            reason = str(exc) if isinstance(exc, JobFailed) else f"{type(exc).__name__}: {exc}"
            await self.fail(record, reason)
            return
        finally:
            progress_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress_task  # never raises otherwise: progress is best effort
        try:
            await self._store_result(record, result)
        except Exception as exc:  # a full disk, say: tell the member rather than go quiet
            log.exception("saving the result of job %s failed", record.id)
            await self.fail(record, f"the result could not be saved ({type(exc).__name__})")
            return
        try:
            await self.deliver(
                await self.storage.jobs.get(record.id, with_image=False), result.elapsed
            )
        except Exception:
            log.exception("delivering job %s failed", record.id)

    async def _show_progress(
        self,
        record: JobRecord,
        handle: JobHandle,
        request: GenerationRequest,
        shown: str | None = None,
    ) -> None:
        try:
            await self._edit_while_waiting(record, handle, request, shown)
        except Exception:  # a busy database, say: the job itself goes on regardless
            log.warning("progress display for job %s stopped", record.id, exc_info=True)

    async def _edit_while_waiting(
        self,
        record: JobRecord,
        handle: JobHandle,
        request: GenerationRequest,
        shown: str | None,
    ) -> None:
        last_edit = float("-inf")
        marked_running = False
        async for _ in handle.updates():
            wait = last_edit + self.progress_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if handle.result.done():
                return
            progress = handle.latest
            if progress.phase is not Phase.QUEUED and not marked_running:
                marked_running = True
                await self.storage.jobs.mark_running(record.id)
            text = render.progress_text(record.id, request, progress)
            preview = await asyncio.to_thread(render.preview_file, progress)  # JPEG: off the loop
            if text == shown and preview is None:
                continue  # queue positions are republished on every change, often unchanged
            last_edit = time.monotonic()
            shown = text
            await self._edit_progress(record, text, file=preview, cancel_button=True)

    async def _store_result(self, record: JobRecord, result: JobResult) -> None:
        for image in result.images:
            await self.storage.images.save(
                record.id,
                image.index,
                image.png,
                seed=image.seed,
                width=image.width,
                height=image.height,
                nsfw=bool(image.nsfw),
            )
        if not await self.storage.jobs.mark_running(record.id):
            pass  # already running (or recovered); mark_done checks the state itself
        await self.storage.jobs.mark_done(record.id, [image.seed for image in result.images])

    async def fail(self, record: JobRecord, reason: str) -> None:
        await self.storage.jobs.mark_failed(record.id, reason)
        await self.storage.limits.refund_job(record.id)
        await self._edit_progress(record, f"**#{record.id}** failed: {reason}", clear=True)

    # -- the finished message ---------------------------------------------------------

    async def deliver(self, record: JobRecord, elapsed: float | None = None) -> None:
        """Post a done job's result once; later calls for the same job do nothing."""
        if record.delivered or record.state is not JobState.DONE:
            return  # e.g. cancelled while the GPU thread was finishing it
        outgoing = await self.compose(record, elapsed)
        try:
            message_id = await self._post_with_retries(record, outgoing)
        except (discord.NotFound, discord.Forbidden) as exc:
            reason = f"cannot post in <#{record.channel_id}> ({exc.text or exc.status})"
            await self.storage.jobs.mark_undeliverable(record.id, reason)
            await self._tell_by_dm(record, f"Your job #{record.id} finished, but {reason}.")
            return
        await self.storage.jobs.mark_delivered(record.id, result_message_id=message_id)

    async def _post_with_retries(self, record: JobRecord, outgoing: Outgoing) -> int:
        for delay in (*POST_RETRY_DELAYS, None):
            try:
                return await self._post_result(record, outgoing)
            except discord.HTTPException as exc:
                transient = exc.status >= 500 or exc.status == 429
                if not transient or delay is None:
                    raise
                log.warning("posting job %s failed (%s); retrying in %gs", record.id, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def compose(
        self, record: JobRecord, elapsed: float | None = None, *, destination: int | None = None
    ) -> Outgoing:
        """The result message of a done job, from the stored images and the guild's policy,
        for the channel it goes to (the job's own unless `destination` says otherwise)."""
        request = GenerationRequest.from_dict(record.request)
        images = await self.storage.images.for_job(record.id)
        datas = [await self.storage.images.read(record.id, i.index) for i in images]
        flagged = [i.nsfw for i in images]
        config = await self.storage.guilds.get(record.guild_id) if record.guild_id else None
        policy = config.nsfw_policy if config else NsfwPolicy.WITHHOLD
        age_restricted = await self._age_restricted(destination or record.channel_id)
        spoiler = any(flagged) and (policy is NsfwPolicy.SPOILER or age_restricted)
        keep = [
            d
            for d, f in zip(datas, flagged, strict=True)
            if not f or policy is NsfwPolicy.ALLOW or spoiler
        ]
        content = f"<@{record.user_id}>"
        withheld = len(datas) - len(keep)
        if withheld:
            content += f" · {withheld} image(s) withheld: flagged by the safety checker"
        limit = self.attachment_limits.get(record.id, DEFAULT_ATTACHMENT_LIMIT)
        file_bytes = await asyncio.to_thread(_attachment, keep, limit) if keep else None
        embed = render.result_embed(record, request, record.seeds, elapsed)
        prefix = "SPOILER_" if spoiler else ""
        ext = "png" if file_bytes is None or file_bytes[:4] == b"\x89PNG" else "jpg"
        return Outgoing(content, embed, file_bytes, f"{prefix}sdbot-{record.id}.{ext}", len(datas))

    async def _age_restricted(self, channel_id: int) -> bool:
        channel = self.client.get_channel(channel_id)
        return bool(getattr(channel, "nsfw", False))

    async def _post_result(self, record: JobRecord, outgoing: Outgoing) -> int:
        view = render.result_view(record.id, outgoing.count)
        try:
            if self._token_usable(record) and record.progress_message_id is not None:
                try:
                    edited = await self._webhook(record).edit_message(
                        record.progress_message_id,
                        content=outgoing.content,
                        embed=outgoing.embed,
                        attachments=outgoing.files(),
                        view=view,
                    )
                    return edited.id
                except discord.NotFound:  # someone deleted the progress message: post anew
                    log.info("progress message of job %s is gone; posting the result", record.id)
                except discord.HTTPException as exc:
                    if exc.status != 401:  # 401: Discord says the token expired; use ours
                        raise
                    log.info("the token of job %s was refused; posting the result", record.id)
            channel = self.client.get_partial_messageable(record.channel_id)
            message = await channel.send(
                content=outgoing.content,
                embed=outgoing.embed,
                files=outgoing.files(),
                view=view,
                allowed_mentions=discord.AllowedMentions(users=True),
            )
            await self._delete_progress(record)
            return message.id
        finally:
            view.stop()  # state lives in the custom_ids; don't keep the view in memory

    # -- the progress message ---------------------------------------------------------

    def _token_usable(self, record: JobRecord) -> bool:
        expires = record.interaction_expires_at
        if record.interaction_token is None or expires is None:
            return False
        return self.clock() < expires - TOKEN_MARGIN

    def _webhook(self, record: JobRecord) -> discord.Webhook:
        assert record.interaction_token is not None and self.client.application_id is not None
        return discord.Webhook.partial(
            self.client.application_id, record.interaction_token, client=self.client
        )

    async def _edit_progress(
        self,
        record: JobRecord,
        content: str,
        *,
        file: discord.File | None = None,
        cancel_button: bool = False,
        clear: bool = False,
    ) -> None:
        """Best effort: a progress edit that fails is logged, never fatal."""
        record = await self.storage.jobs.get(record.id, with_image=False)
        if record.progress_message_id is None:
            return
        view = render.result_view(record.id, 0, finished=False) if cancel_button else None
        attachments: list[discord.File] = [file] if file is not None else []
        if not attachments and not clear:
            attachments = discord.utils.MISSING
        try:
            if self._token_usable(record):
                await self._webhook(record).edit_message(
                    record.progress_message_id, content=content, attachments=attachments, view=view
                )
            else:
                channel = self.client.get_partial_messageable(record.channel_id)
                await channel.get_partial_message(record.progress_message_id).edit(
                    content=content, attachments=attachments, view=view
                )
        except discord.HTTPException as exc:
            log.warning("progress edit for job %s failed: %s", record.id, exc)
        finally:
            if view is not None:
                view.stop()

    async def _delete_progress(self, record: JobRecord) -> None:
        if record.progress_message_id is None:
            return
        channel = self.client.get_partial_messageable(record.channel_id)
        with contextlib.suppress(discord.HTTPException):
            await channel.get_partial_message(record.progress_message_id).delete()

    async def _tell_by_dm(self, record: JobRecord, text: str) -> None:
        try:
            user = await self.client.fetch_user(record.user_id)
            await user.send(text)
        except discord.HTTPException as exc:
            log.info("could not DM user %s: %s", record.user_id, exc)


def _attachment(pngs: list[bytes], limit: int) -> bytes:
    """The single image, or a grid of them, squeezed under the attachment limit."""
    from PIL import Image

    images = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]
    if len(pngs) == 1:
        return fit_under(pngs[0], images[0], limit)
    from generation.output import encode_png

    grid = make_grid(images)
    return fit_under(encode_png(grid), grid, limit)
