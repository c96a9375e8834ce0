"""What users see: progress text, the result embed, and the result buttons.

Pure functions from plain data to discord.py objects, so they are easy to test.
"""

from __future__ import annotations

import io

import discord

from generation.jobs import Phase, Progress
from generation.request import GenerationRequest, Kind
from storage.records import JobRecord

BAR_WIDTH = 20
EMBED_TEXT = 1024


def custom_id(action: str, job_id: int, index: int = 0) -> str:
    """`sdbot:<action>:<job>:<index>`, the state a result button carries."""
    return f"sdbot:{action}:{job_id}:{index}"


def progress_text(job_id: int, request: GenerationRequest, progress: Progress) -> str:
    head = f"**#{job_id}** {_clip(request.prompt, 150)}"
    if progress.phase is Phase.QUEUED:
        where = f"position {progress.position}" if progress.position else "waiting"
        eta = f", starts in about {_duration(progress.eta)}" if progress.eta is not None else ""
        return f"{head}\n⏳ queued: {where}{eta}"
    if progress.phase is Phase.LOADING:
        return f"{head}\n📦 loading model `{request.model}`…"
    total = max(progress.total, 1)
    filled = round(BAR_WIDTH * progress.step / total)
    bar = "█" * filled + "░" * (BAR_WIDTH - filled)
    return f"{head}\n🎨 `{bar}` step {progress.step}/{total} · {progress.elapsed:.1f}s"


def preview_file(progress: Progress) -> discord.File | None:
    """The running job's previews, tiled, as a small JPEG attachment."""
    if not progress.previews:
        return None
    from generation.output import make_grid

    grid = make_grid(list(progress.previews)).convert("RGB")
    buffer = io.BytesIO()
    grid.save(buffer, format="JPEG", quality=70)
    buffer.seek(0)
    return discord.File(buffer, filename="preview.jpg")


def result_embed(
    record: JobRecord, request: GenerationRequest, seeds: tuple[int, ...], elapsed: float | None
) -> discord.Embed:
    title = {
        Kind.TXT2IMG: "Imagined",
        Kind.IMG2IMG: "Image to image",
        Kind.UPSCALE: "Upscaled",
        Kind.VARIATION: "Variation",
    }[request.kind]
    embed = discord.Embed(title=f"{title} · #{record.id}", description=_clip(request.prompt, 4000))
    if request.negative_prompt:
        embed.add_field(
            name="Negative", value=_clip(request.negative_prompt, EMBED_TEXT), inline=False
        )
    embed.add_field(name="Seeds", value=", ".join(str(s) for s in seeds) or "-", inline=True)
    embed.add_field(name="Size", value=f"{request.width}×{request.height}", inline=True)
    embed.add_field(name="Steps", value=str(request.steps), inline=True)
    embed.add_field(name="Guidance", value=f"{request.guidance:g}", inline=True)
    embed.add_field(name="Model", value=request.model, inline=True)
    if elapsed is not None:
        embed.add_field(name="Time", value=f"{elapsed:.1f}s", inline=True)
    if record.parent_job_id is not None:
        index = "" if record.parent_index is None else f" image {record.parent_index + 1}"
        embed.set_footer(text=f"{record.action.value} of #{record.parent_job_id}{index}")
    return embed


def result_view(job_id: int, count: int, *, finished: bool = True) -> discord.ui.View:
    """U1..Un, V1..Vn, then reroll, remix, delete and share; all state is in custom_ids."""
    view = discord.ui.View(timeout=None)
    if not finished:
        view.add_item(_button("Cancel", custom_id("cancel", job_id), discord.ButtonStyle.danger, 0))
        return view
    for i in range(count):
        view.add_item(
            _button(f"U{i + 1}", custom_id("upscale", job_id, i), discord.ButtonStyle.secondary, 0)
        )
    for i in range(count):
        view.add_item(
            _button(f"V{i + 1}", custom_id("vary", job_id, i), discord.ButtonStyle.secondary, 1)
        )
    view.add_item(_button("🔄 Reroll", custom_id("reroll", job_id), discord.ButtonStyle.primary, 2))
    view.add_item(_button("✏️ Remix", custom_id("remix", job_id), discord.ButtonStyle.primary, 2))
    view.add_item(_button("🗑️ Delete", custom_id("delete", job_id), discord.ButtonStyle.danger, 2))
    view.add_item(_button("⭐ Share", custom_id("share", job_id), discord.ButtonStyle.success, 2))
    return view


def _button(label: str, cid: str, style: discord.ButtonStyle, row: int) -> discord.ui.Button:  # type: ignore[type-arg]
    return discord.ui.Button(label=label, custom_id=cid, style=style, row=row)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{max(1, round(seconds))}s"
    return f"{seconds / 60:.0f} min"
