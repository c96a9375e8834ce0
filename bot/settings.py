"""Settings, read once from the environment and `.env`, and checked.

Nothing else in sdbot reads the environment: the entry point builds a
`Settings` and passes plain values to `generation` and `storage`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from generation.flags import parse_aspect
from generation.request import Limits

DEFAULT_MODEL = "sd15=stable-diffusion-v1-5/stable-diffusion-v1-5"


class Settings(BaseSettings):
    """Every setting, with its environment variable name (see `.env.example`)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    discord_token: SecretStr | None = Field(default=None, alias="DISCORD_TOKEN")
    model: str = Field(default=DEFAULT_MODEL, alias="SDBOT_MODEL")
    extra_models: str = Field(default="", alias="SDBOT_MODELS")
    device: Literal["auto", "cuda", "mps", "cpu"] = Field(default="auto", alias="SDBOT_DEVICE")
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(default="auto", alias="SDBOT_DTYPE")
    low_vram: bool = Field(default=False, alias="SDBOT_LOW_VRAM")
    compile: bool = Field(default=False, alias="SDBOT_COMPILE")
    compile_aspects: str = Field(default="1:1,2:3,3:2", alias="SDBOT_COMPILE_ASPECTS")
    channels_last: bool = Field(default=False, alias="SDBOT_CHANNELS_LAST")
    data_dir: Path = Field(default=Path("data"), alias="SDBOT_DATA_DIR")

    max_steps: int = Field(default=60, ge=1, le=500, alias="SDBOT_MAX_STEPS")
    max_pixels: int = Field(default=1024 * 1024, ge=64 * 64, alias="SDBOT_MAX_PIXELS")
    max_count: int = Field(default=4, ge=1, le=4, alias="SDBOT_MAX_COUNT")
    max_batch: int = Field(default=8, ge=1, le=64, alias="SDBOT_MAX_BATCH")
    queue_size: int = Field(default=100, ge=1, le=1000, alias="SDBOT_QUEUE_SIZE")
    max_queued_per_user: int = Field(default=3, ge=1, alias="SDBOT_MAX_QUEUED_PER_USER")
    progress_interval: float = Field(default=1.5, ge=0.2, le=30, alias="SDBOT_PROGRESS_INTERVAL")

    images_per_hour: int = Field(default=40, ge=0, alias="SDBOT_IMAGES_PER_HOUR")
    images_per_day: int = Field(default=200, ge=0, alias="SDBOT_IMAGES_PER_DAY")

    retention_days: float = Field(default=30.0, ge=0, alias="SDBOT_RETENTION_DAYS")
    max_image_gb: float = Field(default=20.0, ge=0, alias="SDBOT_MAX_IMAGE_GB")

    dev_guild_id: int | None = Field(default=None, alias="SDBOT_DEV_GUILD_ID")
    discord_api_url: str | None = Field(default=None, alias="SDBOT_DISCORD_API_URL")
    discord_gateway_url: str | None = Field(default=None, alias="SDBOT_DISCORD_GATEWAY_URL")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", alias="SDBOT_LOG_LEVEL"
    )

    @field_validator("dev_guild_id", "discord_api_url", "discord_gateway_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("compile_aspects")
    @classmethod
    def _aspects_parse(cls, value: str) -> str:
        _aspect_list(value)
        return value

    @field_validator("discord_token", mode="before")
    @classmethod
    def _blank_token_is_unset(cls, value: object) -> object:
        return None if value in ("", None) else value

    @property
    def model_entries(self) -> list[str]:
        extra = [e for e in self.extra_models.split(",") if e.strip()]
        return [self.model, *extra]

    @property
    def compile_aspect_ratios(self) -> tuple[tuple[int, int], ...]:
        return _aspect_list(self.compile_aspects)

    @property
    def compile_cache(self) -> Path:
        return self.data_dir / "compile-cache"

    @property
    def limits(self) -> Limits:
        return Limits(
            max_steps=self.max_steps, max_pixels=self.max_pixels, max_count=self.max_count
        )


def _aspect_list(text: str) -> tuple[tuple[int, int], ...]:
    """`"1:1, 2:3"` -> ((1, 1), (2, 3)); ValueError naming the bad entry."""
    ratios = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        ratio = parse_aspect(part)
        if ratio is None:
            raise ValueError(f"{part!r} is not an aspect ratio like 3:2 (whole numbers, 1 to 100)")
        ratios.append(ratio)
    if not ratios:
        raise ValueError("give at least one aspect ratio, like 1:1")
    return tuple(ratios)
