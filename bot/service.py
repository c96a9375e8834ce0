"""Accepting jobs: policy checks, quota, the job row, then the worker's queue.

Discord-free on purpose (plain ids in, records out), so commands, buttons, the
recovery at start-up and the tests all go through the same door.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from bot.errors import Refused
from generation.jobs import Job
from generation.models import ModelRegistry
from generation.request import GenerationRequest, Limits, RequestOptions
from generation.worker import GenerationWorker, JobHandle
from storage import Storage
from storage.guilds import GuildConfig
from storage.records import Action, JobRecord, NewJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Requester:
    """Who asked, and where: the plain facts a Discord interaction carries."""

    user_id: int
    channel_id: int
    guild_id: int | None = None
    role_ids: tuple[int, ...] = ()
    manage_messages: bool = False


@dataclass(frozen=True)
class Origin:
    """The interaction a job answers; its token can edit messages for 15 minutes."""

    interaction_id: int
    token: str
    created_at: float


@dataclass(frozen=True)
class Lineage:
    """The job and image a button was pressed on."""

    action: Action
    parent_job_id: int | None = None
    parent_index: int | None = None


@dataclass(frozen=True)
class Accepted:
    """A job that is recorded and queued: its row, its worker handle, its request."""

    record: JobRecord
    handle: JobHandle
    request: GenerationRequest


class JobService:
    """The one door into the queue."""

    def __init__(
        self,
        storage: Storage,
        worker: GenerationWorker,
        registry: ModelRegistry,
        limits: Limits,
    ) -> None:
        self.storage = storage
        self.worker = worker
        self.registry = registry
        self.limits = limits
        self._accept_lock = asyncio.Lock()

    async def guild_config(self, guild_id: int | None) -> GuildConfig | None:
        return None if guild_id is None else await self.storage.guilds.get(guild_id)

    async def defaults(self, user_id: int) -> RequestOptions:
        saved = await self.storage.settings.get(user_id)
        return RequestOptions(**saved.as_dict())

    def limits_for(self, config: GuildConfig | None) -> Limits:
        if config is None or config.max_steps is None:
            return self.limits
        return replace(self.limits, max_steps=min(self.limits.max_steps, config.max_steps))

    @staticmethod
    def check_policy(
        config: GuildConfig | None, who: Requester, request: GenerationRequest
    ) -> None:
        """Allowed channel and banned words; raises `Refused` naming which."""
        if config is None:
            return
        if not config.channel_allowed(who.channel_id):
            channels = ", ".join(f"<#{c}>" for c in sorted(config.allowed_channel_ids))
            raise Refused(f"image generation is allowed only in {channels} on this server")
        for text in (request.prompt, request.negative_prompt):
            word = config.banned_word_in(text)
            if word is not None:
                raise Refused(f"the prompt contains {word!r}, which this server bans")

    async def accept(
        self,
        who: Requester,
        request: GenerationRequest,
        lineage: Lineage,
        origin: Origin | None = None,
    ) -> Accepted:
        """Check policy and quota, record the job, queue it. Nothing changes on refusal."""
        config = await self.guild_config(who.guild_id)
        self.check_policy(config, who, request)
        async with self._accept_lock:  # check-then-act on the queue and the quota
            self.worker.check_room(str(who.user_id))
            stored = await self.storage.accept(
                self._new_job(who, request, lineage, origin), request.count, who.role_ids
            )
            record = stored.job
            try:
                handle = self.worker.submit(Job(str(record.id), str(who.user_id), request))
            except BaseException:
                await self.storage.jobs.cancel(record.id, reason="not queued")
                await self.storage.limits.refund_job(record.id)
                raise
        return Accepted(record, handle, request)

    @staticmethod
    def _new_job(
        who: Requester, request: GenerationRequest, lineage: Lineage, origin: Origin | None
    ) -> NewJob:
        return NewJob(
            user_id=who.user_id,
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            request=request.to_dict(),
            action=lineage.action,
            init_image=request.init_image,
            interaction_id=origin.interaction_id if origin else None,
            interaction_token=origin.token if origin else None,
            interaction_created_at=origin.created_at if origin else None,
            parent_job_id=lineage.parent_job_id,
            parent_index=lineage.parent_index,
        )

    def resubmit(self, record: JobRecord) -> JobHandle:
        """Queue a job recovered from storage again (bypasses the bounds: it was accepted)."""
        request = GenerationRequest.from_dict(record.request, record.init_image)
        return self.worker.submit(Job(str(record.id), str(record.user_id), request), force=True)

    async def cancel(self, job_id: int, who: Requester) -> JobRecord:
        """Cancel one of the requester's waiting or running jobs."""
        record = await self.storage.jobs.get(job_id)
        if record.user_id != who.user_id:
            raise Refused(f"job #{job_id} is not yours; you can cancel only your own jobs")
        if record.state.finished:
            raise Refused(f"job #{job_id} is already {record.state.value}")
        if not self.worker.cancel(str(job_id)):
            raise Refused(f"job #{job_id} is not in the queue any more")
        # Recorded now, not when the GPU thread reaches its next step: a stop or crash in
        # between must not bring the job back at the next start.
        await self.storage.jobs.cancel(job_id)
        await self.storage.limits.refund_job(job_id)
        return record
