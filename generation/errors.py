"""Typed errors of the generation package.

Every error carries a message a user can read as it is: which rule failed and
which value broke it.
"""


class GenerationError(Exception):
    """Base class for every error raised by `generation`."""


class InvalidRequest(GenerationError):
    """A request broke a validation rule; nothing was queued."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class FlagError(InvalidRequest):
    """An inline `--flag` in the prompt was unknown or malformed."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"flag {flag}", message)
        self.flag = flag


class UnknownModel(InvalidRequest):
    """The request named a model that is not configured."""

    def __init__(self, name: str, known: list[str]) -> None:
        shown = name if len(name) <= 40 else name[:39] + "…"
        super().__init__("model", f"model must be one of {', '.join(known)}; got {shown!r}")
        self.name = name


class UnsafeWeights(GenerationError):
    """Weights in a pickle format were refused: unpickling can run arbitrary code."""


class ModelLoadError(GenerationError):
    """A model could not be loaded (missing files, bad config, unknown family)."""


class QueueFull(GenerationError):
    """The queue, or this user's share of it, is full."""

    def __init__(self, message: str, *, per_user: bool) -> None:
        super().__init__(message)
        self.per_user = per_user


class WorkerStopped(GenerationError):
    """The worker is shutting down and accepts no new jobs."""


class JobFailed(GenerationError):
    """A job failed while running; the message is the plain reason shown to the user."""


class JobCancelled(GenerationError):
    """A job was cancelled before it finished."""
