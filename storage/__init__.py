"""Everything sdbot remembers: one SQLite file through aiosqlite, images on disk.

Knows nothing of Discord or torch; takes and returns plain frozen dataclasses.
Times are epoch seconds (float); every method that cares about time takes an
optional `now=` and otherwise asks the injected clock.

Open it once, in the entry point, and pass it in::

    storage = await Storage.open(settings.data_dir, images_per_hour=40,
                                 images_per_day=200, clock=time.time)
    ...
    await storage.close()

`Storage.open(data_dir)` creates `data_dir/sdbot.sqlite3` (WAL, busy timeout,
foreign keys, numbered migrations from `storage/migrations/`) and
`data_dir/images/`. Its stores share one connection:

- `storage.accept(new_job, images, role_ids)` -> `Accepted(job, reservation)`:
  the rate-limit reservation and the queued job row, both or neither; raises
  `RateLimited`.
- `storage.jobs` (`JobStore`): `create`, `get`, `mark_running`, `mark_done`,
  `mark_failed`, `cancel` (guarded moves, True if this call made the move),
  `set_progress_message`, `set_result_message`, `mark_delivered` (True for
  exactly one caller),
  `unfinished()` and `undelivered()` for recovery at start, `active_for_user`,
  `history` (a `Page`), `ancestors`, `children`.
- `storage.images` (`ImageStore`): `save` (atomic file, then row), `get`,
  `path`, `read` (raise `ImageMissing`), `for_job`, `delete_job_images`,
  `enforce_retention`.
- `storage.settings` (`UserSettingsStore`): `get`, `set`, `update`, `clear` of
  `UserDefaults`.
- `storage.limits` (`RateLimiter`): `check`, `usage`, `reserve` (raises
  `RateLimited`), `attach`, `refund`, `refund_job`, `prune`; answers are `Quota`s.
- `storage.guilds` (`GuildConfigStore`): `get`, `update`, `reset` of `GuildConfig`.

Errors are in `storage.errors`, all subclasses of `StorageError`.
"""

from storage.database import Database
from storage.errors import (
    DatabaseBusy,
    DatabaseUnavailable,
    ImageMissing,
    InvalidValue,
    JobNotFound,
    MigrationError,
    RateLimited,
    SchemaTooNew,
    StorageError,
)
from storage.facade import Accepted, Storage
from storage.guilds import GuildConfig, GuildConfigStore, NsfwPolicy
from storage.images import ImageRecord, ImageStore, RetentionReport
from storage.jobs import JobStore
from storage.ratelimit import Quota, RateLimiter, Reservation
from storage.records import Action, JobRecord, JobState, NewJob, Page
from storage.settings import UserDefaults, UserSettingsStore
from storage.unset import UNSET

__all__ = [
    "UNSET",
    "Accepted",
    "Action",
    "Database",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "GuildConfig",
    "GuildConfigStore",
    "ImageMissing",
    "ImageRecord",
    "ImageStore",
    "InvalidValue",
    "JobNotFound",
    "JobRecord",
    "JobState",
    "JobStore",
    "MigrationError",
    "NewJob",
    "NsfwPolicy",
    "Page",
    "Quota",
    "RateLimited",
    "RateLimiter",
    "Reservation",
    "RetentionReport",
    "SchemaTooNew",
    "Storage",
    "StorageError",
    "UserDefaults",
    "UserSettingsStore",
]
