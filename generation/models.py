"""Model specs: which models are configured, their family presets, and where they come from.

A model source is one of:
- `tiny`: the built-in random pipeline (no download; see `generation.tiny`);
- a hub id such as `stable-diffusion-v1-5/stable-diffusion-v1-5`;
- a local diffusers folder (with `model_index.json`);
- one `.safetensors` checkpoint file.
Pickled weights are refused here, before anything is loaded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from generation.errors import ModelLoadError, UnknownModel, UnsafeWeights

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")

SD_LATENT_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
SDXL_LATENT_RGB = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_LATENT_BIAS = (0.1084, -0.0175, -0.0011)


@dataclass(frozen=True)
class Family:
    """Defaults shared by every model of one architecture."""

    name: str
    label: str
    native_size: int
    steps: int
    guidance: float
    scheduler: str
    xl: bool
    latent_rgb: tuple[tuple[float, float, float], ...]
    latent_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    vae_scale: int = 8

    @property
    def native_pixels(self) -> int:
        return self.native_size * self.native_size

    @property
    def guidance_free(self) -> bool:
        """Turbo models are distilled to run without classifier-free guidance."""
        return self.guidance <= 1.0


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("sd15", "Stable Diffusion 1.5", 512, 25, 7.0, "euler", False, SD_LATENT_RGB),
        Family("sd21", "Stable Diffusion 2.1", 768, 25, 7.0, "euler", False, SD_LATENT_RGB),
        Family(
            "sdxl",
            "Stable Diffusion XL",
            1024,
            25,
            6.0,
            "euler",
            True,
            SDXL_LATENT_RGB,
            SDXL_LATENT_BIAS,
        ),
        Family("sd-turbo", "SD-Turbo", 512, 2, 0.0, "euler-a", False, SD_LATENT_RGB),
        Family(
            "sdxl-turbo",
            "SDXL-Turbo",
            512,
            2,
            0.0,
            "euler-a",
            True,
            SDXL_LATENT_RGB,
            SDXL_LATENT_BIAS,
        ),
        Family("tiny", "built-in tiny random model", 256, 4, 7.0, "euler", False, SD_LATENT_RGB),
    )
}

SCHEDULERS = ("euler", "euler-a", "ddim", "dpm++", "dpm++-karras", "lms", "pndm", "unipc")


@dataclass(frozen=True)
class ModelSpec:
    """One configured model: the name users type, where it loads from, its family."""

    name: str
    source: str
    family: Family

    @property
    def source_kind(self) -> str:
        if self.source == "tiny":
            return "tiny"
        if self.source.endswith(".safetensors"):
            return "file"
        if Path(self.source).expanduser().is_dir():
            return "dir"
        return "hub"


def refuse_pickle(path: str) -> None:
    """Raise `UnsafeWeights` when `path` names a pickled checkpoint."""
    if path.lower().endswith(PICKLE_SUFFIXES):
        raise UnsafeWeights(
            f"refusing to load {path}: pickled weights ({Path(path).suffix}) can run arbitrary "
            "code when loaded. Convert the checkpoint to .safetensors first."
        )


def guess_family(source: str) -> Family:
    """The family of a source, from a folder's configs or from the name's usual markers."""
    if source == "tiny":
        return FAMILIES["tiny"]
    folder = Path(source).expanduser()
    index = folder / "model_index.json"
    if index.is_file():
        return _family_from_folder(folder, index)
    lowered = source.lower()
    xl = "xl" in lowered
    if "turbo" in lowered:
        return FAMILIES["sdxl-turbo" if xl else "sd-turbo"]
    if xl:
        return FAMILIES["sdxl"]
    if re.search(r"2[-._]?1|v2|-2-", lowered):
        return FAMILIES["sd21"]
    return FAMILIES["sd15"]


def _family_from_folder(folder: Path, index: Path) -> Family:
    try:
        class_name = json.loads(index.read_text()).get("_class_name", "")
        unet_config = json.loads((folder / "unet" / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the model configs in {folder}: {exc}") from exc
    xl = "XL" in class_name
    sample = int(unet_config.get("sample_size", 64))
    if sample <= 32:
        return FAMILIES["tiny"]
    if xl:
        return FAMILIES["sdxl"]
    return FAMILIES["sd21"] if sample >= 96 else FAMILIES["sd15"]


def parse_model_entry(entry: str) -> ModelSpec:
    """Parse `[name=]source[@family]` as written in `SDBOT_MODEL` / `SDBOT_MODELS`."""
    entry = entry.strip()
    if not entry:
        raise ModelLoadError("a model entry is empty")
    name, _, source = entry.rpartition("=") if "=" in entry else ("", "", entry)
    family_name = ""
    if "@" in source:
        head, _, tail = source.rpartition("@")
        if tail in FAMILIES:
            source, family_name = head, tail
    source = source.strip()
    refuse_pickle(source)
    if not name:
        base = Path(source).name if source != "tiny" else "tiny"
        name = base.removesuffix(".safetensors").lower()
    name = name.strip().lower()
    if not NAME_PATTERN.match(name):
        raise ModelLoadError(
            f"model name must be 1-40 of a-z, 0-9, '.', '_', '-'; got {name!r} (from {entry!r})"
        )
    family = FAMILIES[family_name] if family_name else guess_family(source)
    return ModelSpec(name=name, source=source, family=family)


class ModelRegistry:
    """The configured models, by name; the first is the default."""

    def __init__(self, specs: list[ModelSpec]) -> None:
        if not specs:
            raise ModelLoadError("no model is configured")
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ModelLoadError(f"two models are named {spec.name!r}; name one `name=source`")
            self._specs[spec.name] = spec
        self.default = specs[0]

    @classmethod
    def from_entries(cls, entries: list[str], *, include_tiny: bool = True) -> ModelRegistry:
        specs = [parse_model_entry(e) for e in entries if e.strip()]
        if include_tiny and not any(s.name == "tiny" for s in specs):
            specs.append(parse_model_entry("tiny"))
        return cls(specs)

    def get(self, name: str | None) -> ModelSpec:
        if name is None or name == "":
            return self.default
        spec = self._specs.get(name.strip().lower())
        if spec is None:
            raise UnknownModel(name, self.names())
        return spec

    def names(self) -> list[str]:
        return list(self._specs)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)
