"""Per-guild configuration, set by server managers through /config.

A guild with no row gets `GuildConfig(guild_id)`: every channel allowed, no
banned words, NSFW images withheld, the bot's own rate limits, no exempt roles.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from storage.database import Database, Session
from storage.errors import InvalidValue
from storage.unset import UNSET, Unset

MAX_BANNED_WORDS = 500
MAX_WORD_CHARS = 100


class NsfwPolicy(StrEnum):
    """What happens to an image the safety checker flags."""

    WITHHOLD = "withhold"  # not posted; the user is told why
    SPOILER = "spoiler"  # posted behind a spoiler
    ALLOW = "allow"  # posted as is (for age-restricted servers)


@dataclass(frozen=True)
class GuildConfig:
    """One guild's settings. For the limits, None means "the bot's default"."""

    guild_id: int
    showcase_channel_id: int | None = None
    allowed_channel_ids: frozenset[int] = frozenset()
    banned_words: tuple[str, ...] = ()
    nsfw_policy: NsfwPolicy = NsfwPolicy.WITHHOLD
    images_per_hour: int | None = None
    images_per_day: int | None = None
    max_steps: int | None = None
    exempt_role_ids: frozenset[int] = frozenset()

    def channel_allowed(self, channel_id: int) -> bool:
        """Whether /imagine may run in that channel (no list means every channel)."""
        return not self.allowed_channel_ids or channel_id in self.allowed_channel_ids

    def is_exempt(self, role_ids: Iterable[int]) -> bool:
        """Whether a member with these roles skips the rate limits."""
        return not self.exempt_role_ids.isdisjoint(role_ids)

    def banned_word_in(self, text: str) -> str | None:
        """The first banned word or phrase found in `text` as a whole word, ignoring case."""
        lowered = text.casefold()
        for word in self.banned_words:
            if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", lowered):
                return word
        return None


_COLUMNS = (
    "showcase_channel_id, allowed_channel_ids, banned_words, nsfw_policy, "
    "images_per_hour, images_per_day, max_steps, exempt_role_ids"
)


def _from_row(guild_id: int, row: sqlite3.Row | None) -> GuildConfig:
    if row is None:
        return GuildConfig(guild_id)
    return GuildConfig(
        guild_id=guild_id,
        showcase_channel_id=row["showcase_channel_id"],
        allowed_channel_ids=frozenset(json.loads(row["allowed_channel_ids"])),
        banned_words=tuple(json.loads(row["banned_words"])),
        nsfw_policy=NsfwPolicy(row["nsfw_policy"]),
        images_per_hour=row["images_per_hour"],
        images_per_day=row["images_per_day"],
        max_steps=row["max_steps"],
        exempt_role_ids=frozenset(json.loads(row["exempt_role_ids"])),
    )


async def load_guild_config(session: Session, guild_id: int) -> GuildConfig:
    """The guild's config inside the caller's read or transaction."""
    row = await session.one(f"SELECT {_COLUMNS} FROM guild_config WHERE guild_id = ?", (guild_id,))
    return _from_row(guild_id, row)


def _clean_words(words: Iterable[str]) -> tuple[str, ...]:
    cleaned: list[str] = []
    for word in words:
        if not isinstance(word, str):
            raise InvalidValue("banned_words", f"banned words must be text; got {word!r}")
        word = " ".join(word.casefold().split())
        if len(word) > MAX_WORD_CHARS:
            raise InvalidValue(
                "banned_words",
                f"a banned word must be at most {MAX_WORD_CHARS} characters; got {len(word)}",
            )
        if word and word not in cleaned:
            cleaned.append(word)
    if len(cleaned) > MAX_BANNED_WORDS:
        raise InvalidValue(
            "banned_words", f"at most {MAX_BANNED_WORDS} banned words; got {len(cleaned)}"
        )
    return tuple(cleaned)


def _check_limit(name: str, value: int | None, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidValue(
            name, f"{name} must be a whole number of {minimum} or more; got {value!r}"
        )


def _check(config: GuildConfig) -> GuildConfig:
    try:
        policy = NsfwPolicy(config.nsfw_policy)
    except ValueError:
        choices = ", ".join(p.value for p in NsfwPolicy)
        raise InvalidValue(
            "nsfw_policy", f"nsfw_policy must be one of {choices}; got {config.nsfw_policy!r}"
        ) from None
    _check_limit("images_per_hour", config.images_per_hour, 0)
    _check_limit("images_per_day", config.images_per_day, 0)
    _check_limit("max_steps", config.max_steps, 1)
    return dataclasses.replace(
        config,
        nsfw_policy=policy,
        banned_words=_clean_words(config.banned_words),
        allowed_channel_ids=frozenset(int(c) for c in config.allowed_channel_ids),
        exempt_role_ids=frozenset(int(r) for r in config.exempt_role_ids),
    )


class GuildConfigStore:
    """Reads and writes `GuildConfig`s."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, guild_id: int) -> GuildConfig:
        """The guild's config, or the defaults when it never set any."""
        async with self._db.read() as session:
            return await load_guild_config(session, guild_id)

    async def update(
        self,
        guild_id: int,
        *,
        showcase_channel_id: int | Unset | None = UNSET,
        allowed_channel_ids: Iterable[int] | Unset = UNSET,
        banned_words: Iterable[str] | Unset = UNSET,
        nsfw_policy: NsfwPolicy | str | Unset = UNSET,
        images_per_hour: int | Unset | None = UNSET,
        images_per_day: int | Unset | None = UNSET,
        max_steps: int | Unset | None = UNSET,
        exempt_role_ids: Iterable[int] | Unset = UNSET,
    ) -> GuildConfig:
        """Change the fields given (None resets a limit to the bot's default); return the result.

        Banned words are stored lower-cased, trimmed and without duplicates.
        """
        given = {
            "showcase_channel_id": showcase_channel_id,
            "allowed_channel_ids": allowed_channel_ids,
            "banned_words": banned_words,
            "nsfw_policy": nsfw_policy,
            "images_per_hour": images_per_hour,
            "images_per_day": images_per_day,
            "max_steps": max_steps,
            "exempt_role_ids": exempt_role_ids,
        }
        changes: dict[str, Any] = {k: v for k, v in given.items() if v is not UNSET}
        async with self._db.transaction() as session:
            current = await load_guild_config(session, guild_id)
            config = _check(dataclasses.replace(current, **changes))
            await session.run(
                f"INSERT OR REPLACE INTO guild_config (guild_id, {_COLUMNS}, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    guild_id,
                    config.showcase_channel_id,
                    json.dumps(sorted(config.allowed_channel_ids)),
                    json.dumps(list(config.banned_words)),
                    config.nsfw_policy.value,
                    config.images_per_hour,
                    config.images_per_day,
                    config.max_steps,
                    json.dumps(sorted(config.exempt_role_ids)),
                    self._db.clock(),
                ),
            )
        return config

    async def reset(self, guild_id: int) -> None:
        """Forget the guild's config (back to the defaults)."""
        await self._db.run("DELETE FROM guild_config WHERE guild_id = ?", (guild_id,))
