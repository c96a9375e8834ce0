"""Per-user defaults and per-guild config."""

from __future__ import annotations

import dataclasses

import pytest

from generation.request import RequestOptions
from storage import GuildConfig, InvalidValue, NsfwPolicy, Storage, UserDefaults


async def test_user_defaults_start_empty_and_update_field_by_field(storage: Storage) -> None:
    assert (await storage.settings.get(1)).empty
    await storage.settings.update(1, steps=30, model="sdxl")
    saved = await storage.settings.update(1, negative_prompt="blurry", guidance=6.5)
    assert saved == UserDefaults(model="sdxl", steps=30, guidance=6.5, negative_prompt="blurry")
    cleared = await storage.settings.update(1, steps=None)
    assert cleared.steps is None and cleared.model == "sdxl"
    assert await storage.settings.get(1) == cleared
    assert (await storage.settings.get(2)).empty


async def test_set_replaces_and_clear_forgets(storage: Storage) -> None:
    await storage.settings.update(1, steps=30, model="sdxl")
    await storage.settings.set(1, UserDefaults(aspect="16:9", count=2))
    assert await storage.settings.get(1) == UserDefaults(aspect="16:9", count=2)
    await storage.settings.clear(1)
    assert (await storage.settings.get(1)).empty


async def test_defaults_become_request_options(storage: Storage) -> None:
    saved = await storage.settings.update(1, aspect="3:2", count=4, guidance=7.0)
    options = RequestOptions(**saved.as_dict())
    assert (options.aspect, options.count, options.guidance) == ("3:2", 4, 7.0)
    option_names = {f.name for f in dataclasses.fields(RequestOptions)}
    assert {f.name for f in dataclasses.fields(UserDefaults)} <= option_names


async def test_bad_defaults_name_rule_and_value(storage: Storage) -> None:
    with pytest.raises(InvalidValue, match="steps must be 1 or more; got 0"):
        await storage.settings.update(1, steps=0)
    with pytest.raises(InvalidValue, match="guidance must be a number of 0 or more; got -1"):
        await storage.settings.update(1, guidance=-1)
    assert (await storage.settings.get(1)).empty


async def test_guild_config_defaults_when_absent(storage: Storage) -> None:
    config = await storage.guilds.get(5)
    assert config == GuildConfig(5)
    assert config.nsfw_policy is NsfwPolicy.WITHHOLD
    assert config.channel_allowed(123) and config.banned_word_in("anything") is None


async def test_guild_config_update_keeps_other_fields(storage: Storage) -> None:
    await storage.guilds.update(
        5,
        showcase_channel_id=9,
        allowed_channel_ids=[1, 2],
        banned_words=["Gore", " gore ", ""],
        nsfw_policy="spoiler",
        images_per_hour=5,
        exempt_role_ids={42},
    )
    config = await storage.guilds.update(5, max_steps=30)
    assert config == await storage.guilds.get(5)
    assert config.showcase_channel_id == 9 and config.max_steps == 30
    assert config.allowed_channel_ids == frozenset({1, 2}) and config.banned_words == ("gore",)
    assert config.nsfw_policy is NsfwPolicy.SPOILER and config.images_per_hour == 5
    assert config.channel_allowed(2) and not config.channel_allowed(3)
    assert config.is_exempt([1, 42]) and not config.is_exempt([1])
    assert config.banned_word_in("lots of GORE here") == "gore"
    assert config.banned_word_in("gorgeous mountains") is None
    reset = await storage.guilds.update(5, images_per_hour=None, showcase_channel_id=None)
    assert reset.images_per_hour is None and reset.showcase_channel_id is None
    await storage.guilds.reset(5)
    assert await storage.guilds.get(5) == GuildConfig(5)


async def test_guild_config_validation(storage: Storage) -> None:
    with pytest.raises(InvalidValue, match="nsfw_policy must be one of withhold, spoiler, allow"):
        await storage.guilds.update(5, nsfw_policy="sometimes")
    with pytest.raises(InvalidValue, match="max_steps must be a whole number of 1 or more; got 0"):
        await storage.guilds.update(5, max_steps=0)
    with pytest.raises(InvalidValue, match="images_per_day"):
        await storage.guilds.update(5, images_per_day=-3)
    assert await storage.guilds.get(5) == GuildConfig(5)
