"""Per-user defaults, applied beneath a request's explicit options.

Only stored here; `generation` does the merge. Field names match
`generation.request.RequestOptions`, so `RequestOptions(**defaults.as_dict())`
turns them into options.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass
from typing import Any

from storage.database import Database
from storage.errors import InvalidValue
from storage.unset import UNSET, Unset

MAX_TEXT_CHARS = 1500


@dataclass(frozen=True)
class UserDefaults:
    """A user's saved defaults; None means "no default, use the server's"."""

    model: str | None = None
    aspect: str | None = None
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None
    count: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields that are set, by name."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @property
    def empty(self) -> bool:
        return not self.as_dict()


FIELDS = tuple(f.name for f in dataclasses.fields(UserDefaults))


def _check(defaults: UserDefaults) -> None:
    for name in ("model", "aspect", "negative_prompt"):
        value = getattr(defaults, name)
        if value is not None and not isinstance(value, str):
            raise InvalidValue(name, f"{name} must be text; got {value!r}")
        if value is not None and len(value) > MAX_TEXT_CHARS:
            raise InvalidValue(
                name, f"{name} must be at most {MAX_TEXT_CHARS} characters; got {len(value)}"
            )
    for name in ("steps", "count"):
        value = getattr(defaults, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidValue(name, f"{name} must be a whole number; got {value!r}")
        if value is not None and value < 1:
            raise InvalidValue(name, f"{name} must be 1 or more; got {value}")
    guidance = defaults.guidance
    if guidance is not None and (
        isinstance(guidance, bool) or not isinstance(guidance, int | float) or guidance < 0
    ):
        raise InvalidValue("guidance", f"guidance must be a number of 0 or more; got {guidance!r}")


def _from_row(row: sqlite3.Row | None) -> UserDefaults:
    if row is None:
        return UserDefaults()
    return UserDefaults(**{name: row[name] for name in FIELDS})


class UserSettingsStore:
    """Saved `/settings` per Discord user."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, user_id: int) -> UserDefaults:
        """The user's defaults; all None when they never saved any."""
        row = await self._db.one(
            f"SELECT {', '.join(FIELDS)} FROM user_defaults WHERE user_id = ?", (user_id,)
        )
        return _from_row(row)

    async def set(self, user_id: int, defaults: UserDefaults) -> UserDefaults:
        """Replace every default of the user with `defaults`."""
        _check(defaults)
        values = [getattr(defaults, name) for name in FIELDS]
        await self._db.run(
            f"INSERT INTO user_defaults (user_id, {', '.join(FIELDS)}, updated_at) "
            f"VALUES (?, {', '.join('?' for _ in FIELDS)}, ?) "
            f"ON CONFLICT (user_id) DO UPDATE SET "
            f"{', '.join(f'{n} = excluded.{n}' for n in FIELDS)}, updated_at = excluded.updated_at",
            (user_id, *values, self._db.clock()),
        )
        return defaults

    async def update(
        self,
        user_id: int,
        *,
        model: str | Unset | None = UNSET,
        aspect: str | Unset | None = UNSET,
        steps: int | Unset | None = UNSET,
        guidance: float | Unset | None = UNSET,
        negative_prompt: str | Unset | None = UNSET,
        count: int | Unset | None = UNSET,
    ) -> UserDefaults:
        """Change the fields given (None clears one); return the defaults as saved."""
        given = {
            "model": model,
            "aspect": aspect,
            "steps": steps,
            "guidance": guidance,
            "negative_prompt": negative_prompt,
            "count": count,
        }
        changes: dict[str, Any] = {k: v for k, v in given.items() if v is not UNSET}
        async with self._db.transaction() as session:
            row = await session.one(
                f"SELECT {', '.join(FIELDS)} FROM user_defaults WHERE user_id = ?", (user_id,)
            )
            merged = dataclasses.replace(_from_row(row), **changes)
            _check(merged)
            await session.run(
                f"INSERT OR REPLACE INTO user_defaults (user_id, {', '.join(FIELDS)}, updated_at) "
                f"VALUES (?, {', '.join('?' for _ in FIELDS)}, ?)",
                (user_id, *[getattr(merged, n) for n in FIELDS], self._db.clock()),
            )
        return merged

    async def clear(self, user_id: int) -> None:
        """Forget every default of the user."""
        await self._db.run("DELETE FROM user_defaults WHERE user_id = ?", (user_id,))
