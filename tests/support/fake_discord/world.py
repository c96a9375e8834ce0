"""The fake's world: users, one guild with roles, members and channels, and DM channels.

Everything here is plain data plus the payload shapes discord.py parses. The default world
(`World.default()`) is what most tests want: one guild with text channels (one age-restricted,
one showcase), and members with and without Manage Server / Manage Messages.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from enum import IntFlag
from typing import Any

DISCORD_EPOCH_MS = 1_420_070_400_000


class SnowflakeFactory:
    """Increasing, realistic snowflakes (the timestamp bits are the current time)."""

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._last = 0

    def __call__(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        value = (ms << 22) | (next(self._counter) & 0xFFF)
        self._last = max(value, self._last + 1)
        return self._last


class Perm(IntFlag):
    """The permission bits the fake computes with (Discord's values)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CHANGE_NICKNAME = 1 << 26
    USE_APPLICATION_COMMANDS = 1 << 31
    SEND_MESSAGES_IN_THREADS = 1 << 38


ALL_PERMISSIONS = (1 << 53) - 1

EVERYONE_PERMISSIONS = (
    Perm.CREATE_INSTANT_INVITE
    | Perm.ADD_REACTIONS
    | Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.CHANGE_NICKNAME
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.SEND_MESSAGES_IN_THREADS
)

# Channel types (Discord's values).
GUILD_TEXT = 0
DM = 1


@dataclass
class FakeUser:
    id: int
    name: str
    bot: bool = False
    global_name: str | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": self.global_name or self.name.title(),
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
            "flags": 0,
        }


@dataclass
class FakeRole:
    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": self.managed,
            "mentionable": False,
            "flags": 0,
            "icon": None,
            "unicode_emoji": None,
        }


@dataclass
class FakeMember:
    user: FakeUser
    role_ids: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = "2024-01-01T00:00:00+00:00"

    def payload(self, permissions: int | None = None) -> dict[str, Any]:
        """The member object; with `permissions` it is the interaction flavour."""
        data: dict[str, Any] = {
            "user": self.user.payload(),
            "roles": [str(r) for r in self.role_ids],
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass
class FakeChannel:
    """A guild text channel or a DM channel (`recipient` set, `guild_id` None)."""

    id: int
    name: str
    type: int = GUILD_TEXT
    guild_id: int | None = None
    position: int = 0
    nsfw: bool = False
    topic: str | None = None
    recipient: FakeUser | None = None
    # Bot-token sends/edits here answer 403 50013; see `World.forbid_channel`.
    forbidden: bool = False

    @property
    def is_dm(self) -> bool:
        return self.type == DM

    def payload(self, bot_id: int | None = None) -> dict[str, Any]:
        if self.is_dm:
            assert self.recipient is not None
            return {
                "id": str(self.id),
                "type": DM,
                "recipients": [self.recipient.payload()],
                "last_message_id": None,
                "flags": 0,
            }
        overwrites = []
        if self.forbidden and bot_id is not None:
            deny = Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES
            overwrites.append({"id": str(bot_id), "type": 1, "allow": "0", "deny": str(deny)})
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "parent_id": None,
            "topic": self.topic,
            "nsfw": self.nsfw,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "permission_overwrites": overwrites,
            "flags": 0,
        }


@dataclass
class FakeGuild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, FakeRole] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    channels: dict[int, FakeChannel] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The guild object without channels and members (REST `GET /guilds/{id}`)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in self.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
        }

    def gateway_payload(self, bot_id: int) -> dict[str, Any]:
        """The GUILD_CREATE payload: the guild plus channels, members and counts."""
        return {
            **self.payload(),
            "unavailable": False,
            "large": False,
            "joined_at": "2024-01-01T00:00:00+00:00",
            "member_count": len(self.members),
            "channels": [c.payload(bot_id) for c in self.channels.values()],
            "members": [m.payload() for m in self.members.values()],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }


class World:
    """Users, the guild and DM channels, with lookup by name and permission resolution."""

    def __init__(self, snowflake: SnowflakeFactory, bot: FakeUser, guild: FakeGuild) -> None:
        self.snowflake = snowflake
        self.bot = bot
        self.guild = guild
        self.users: dict[int, FakeUser] = {bot.id: bot}
        self.channels: dict[int, FakeChannel] = {}
        self.dm_blocked: set[int] = set()

    @classmethod
    def default(cls, snowflake: SnowflakeFactory) -> World:
        """One guild, four text channels, an owner, an admin, a moderator and two members.

        Users by name: `owner` (guild owner: every permission), `admin` (Manage Server),
        `mod` (Manage Messages), `alice` and `bob` (plain members).
        Channels by name: `general`, `art`, `nsfw-art` (age-restricted), `showcase`.
        """
        bot = FakeUser(snowflake(), "sdbot", bot=True)
        owner = FakeUser(snowflake(), "owner")
        guild = FakeGuild(snowflake(), "sdbot test server", owner_id=owner.id)
        world = cls(snowflake, bot, guild)
        guild.roles[guild.id] = FakeRole(guild.id, "@everyone", int(EVERYONE_PERMISSIONS))
        bot_role = world.add_role("sdbot", int(EVERYONE_PERMISSIONS), managed=True)
        admin = world.add_role("Admin", int(Perm.MANAGE_GUILD | Perm.MANAGE_MESSAGES))
        mod = world.add_role("Moderator", int(Perm.MANAGE_MESSAGES))
        world.add_member(bot, roles=[bot_role])
        world.add_member(owner)
        world.add_user("admin", roles=[admin])
        world.add_user("mod", roles=[mod])
        world.add_user("alice")
        world.add_user("bob")
        for name in ("general", "art"):
            world.add_channel(name)
        world.add_channel("nsfw-art", nsfw=True)
        world.add_channel("showcase")
        return world

    # Building

    def add_role(self, name: str, permissions: int, *, managed: bool = False) -> FakeRole:
        role = FakeRole(self.snowflake(), name, permissions, len(self.guild.roles), managed)
        self.guild.roles[role.id] = role
        return role

    def add_member(self, user: FakeUser, roles: list[FakeRole] | None = None) -> FakeMember:
        self.users[user.id] = user
        member = FakeMember(user, [r.id for r in roles or []])
        self.guild.members[user.id] = member
        return member

    def add_user(
        self, name: str, *, roles: list[FakeRole] | None = None, member: bool = True
    ) -> FakeUser:
        """A new user; a guild member (with `roles`) unless `member=False`."""
        user = FakeUser(self.snowflake(), name)
        self.users[user.id] = user
        if member:
            self.add_member(user, roles)
        return user

    def add_channel(
        self, name: str, *, nsfw: bool = False, topic: str | None = None
    ) -> FakeChannel:
        position = len(self.guild.channels)
        channel = FakeChannel(
            self.snowflake(),
            name,
            guild_id=self.guild.id,
            position=position,
            nsfw=nsfw,
            topic=topic,
        )
        self.guild.channels[channel.id] = channel
        self.channels[channel.id] = channel
        return channel

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The DM channel between the bot and `user`, created on first use."""
        for channel in self.channels.values():
            if channel.is_dm and channel.recipient is not None and channel.recipient.id == user.id:
                return channel
        channel = FakeChannel(self.snowflake(), f"dm-{user.name}", type=DM, recipient=user)
        self.channels[channel.id] = channel
        return channel

    # Lookup

    def user(self, key: FakeUser | str | int) -> FakeUser:
        """A user by object, name or id (KeyError with the known names otherwise)."""
        if isinstance(key, FakeUser):
            return key
        for user in self.users.values():
            if key in (user.id, user.name):
                return user
        raise KeyError(f"no user {key!r}; known: {sorted(u.name for u in self.users.values())}")

    def channel(self, key: FakeChannel | str | int) -> FakeChannel:
        """A channel by object, name or id (KeyError with the known names otherwise)."""
        if isinstance(key, FakeChannel):
            return key
        for channel in self.channels.values():
            if key in (channel.id, channel.name):
                return channel
        names = sorted(c.name for c in self.channels.values())
        raise KeyError(f"no channel {key!r}; known: {names}")

    def member(self, user: FakeUser) -> FakeMember | None:
        return self.guild.members.get(user.id)

    # Permissions

    def base_permissions(self, user: FakeUser) -> int:
        """Guild-level permissions: @everyone plus the member's roles; owner/admin get all."""
        member = self.member(user)
        if member is None:
            return 0
        if user.id == self.guild.owner_id:
            return ALL_PERMISSIONS
        perms = self.guild.roles[self.guild.id].permissions
        for role_id in member.role_ids:
            perms |= self.guild.roles[role_id].permissions
        if perms & Perm.ADMINISTRATOR:
            return ALL_PERMISSIONS
        return perms

    def permissions_in(self, user: FakeUser, channel: FakeChannel) -> int:
        """Permissions of `user` in `channel` (a forbidden channel denies the bot access)."""
        if channel.is_dm:
            return int(EVERYONE_PERMISSIONS)
        perms = self.base_permissions(user)
        if channel.forbidden and user.id == self.bot.id and perms != ALL_PERMISSIONS:
            perms &= ~(Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES)
        return perms
