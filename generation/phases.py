"""Where a batch's time goes: prompt encoding, denoising, VAE decode, conversion.

On CUDA the marks are events recorded in the stream, so taking them never waits
for the GPU; they are read after the batch's one unavoidable sync (the copy of
the finished pixels to the host). On the CPU work is synchronous and the marks
are plain clock readings. (On Apple's MPS, which queues work like CUDA but has no
events here, the clock readings show when work was queued, so only the total
means much there.) The runner keeps the last batch's phases for
logs and for `bench/gpu.py`, which sums them to show what lies outside the UNet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BatchPhases:
    """Seconds of one pipeline call, by phase, as the device saw them."""

    images: int
    steps: int
    prepare_s: float  # prompt encoding, latents and scheduler set-up, before the first step
    denoise_s: float  # every UNet step, with guidance and the scheduler's update
    decode_s: float  # the VAE decode and the pipeline's post-processing
    finish_s: float  # 8-bit conversion, finiteness and safety checks, before the copy out
    wall_s: float  # the whole call on the host clock, copy to the host included

    @property
    def device_s(self) -> float:
        return self.prepare_s + self.denoise_s + self.decode_s + self.finish_s


class Marks:
    """Named points in a batch, on the device's own timeline."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.points: dict[str, torch.cuda.Event | float] = {}
        self.started = time.perf_counter()

    def mark(self, name: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))  # that card's, not device 0's
            self.points[name] = event
        else:
            self.points[name] = time.perf_counter()

    def between(self, first: str, last: str) -> float:
        """Seconds from mark `first` to mark `last` (after the device caught up)."""
        a, b = self.points[first], self.points[last]
        if isinstance(a, float) and isinstance(b, float):
            return b - a
        assert isinstance(a, torch.cuda.Event) and isinstance(b, torch.cuda.Event)
        return a.elapsed_time(b) / 1000.0

    def phases(self, images: int, steps: int) -> BatchPhases | None:
        """The phases, from marks start, first_step, last_step, decoded and finished;
        None if the batch did not reach them all (interrupted)."""
        names = ("start", "first_step", "last_step", "decoded", "finished")
        if any(name not in self.points for name in names):
            return None
        wall = time.perf_counter() - self.started
        later_steps = self.between("first_step", "last_step")
        # The first mark comes after step 1; the other steps give its likely length.
        per_step = later_steps / (steps - 1) if steps > 1 else 0.0
        before_first = self.between("start", "first_step")
        first = min(per_step, before_first) if steps > 1 else before_first
        return BatchPhases(
            images=images,
            steps=steps,
            prepare_s=before_first - first,
            denoise_s=first + later_steps,
            decode_s=self.between("last_step", "decoded"),
            finish_s=self.between("decoded", "finished"),
            wall_s=wall,
        )
