"""Output images: PNGs with an A1111-style `parameters` chunk, and grids for display.

Community tools (A1111, ComfyUI, Civitai, PNG Info) read the `parameters` text
chunk; its layout is: prompt line(s), `Negative prompt: ...`, then one line of
`Key: value` pairs.
"""

from __future__ import annotations

import io
import math

from PIL import Image, PngImagePlugin

from generation.request import GenerationRequest

SCHEDULER_LABELS = {
    "euler": "Euler",
    "euler-a": "Euler a",
    "ddim": "DDIM",
    "dpm++": "DPM++ 2M",
    "dpm++-karras": "DPM++ 2M Karras",
    "lms": "LMS",
    "pndm": "PNDM",
    "unipc": "UniPC",
}


def parameters_text(request: GenerationRequest, seed: int, model_label: str) -> str:
    """The A1111 `parameters` text for one image of `request`."""
    lines = [request.prompt]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    fields = [
        ("Steps", str(request.steps)),
        ("Sampler", SCHEDULER_LABELS.get(request.scheduler, request.scheduler)),
        ("CFG scale", f"{request.guidance:g}"),
        ("Seed", str(seed)),
        ("Size", f"{request.width}x{request.height}"),
        ("Model", model_label),
    ]
    if request.kind.needs_image:
        fields.append(("Denoising strength", f"{request.strength:g}"))
    fields.append(("Version", "sdbot"))
    lines.append(", ".join(f"{k}: {v}" for k, v in fields))
    return "\n".join(lines)


def encode_png(image: Image.Image, parameters: str | None = None) -> bytes:
    """PNG bytes of `image`, with the `parameters` text chunk when given."""
    info = PngImagePlugin.PngInfo()
    if parameters is not None:
        info.add_itxt("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=4)
    return buffer.getvalue()


def read_parameters(png: bytes) -> str | None:
    """The `parameters` chunk of a PNG, or None."""
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        value = image.info.get("parameters")
    return value if isinstance(value, str) else None


def make_grid(images: list[Image.Image], gap: int = 4) -> Image.Image:
    """Images side by side in a near-square grid (2x2 for four), with a small gap."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    if len(images) == 1:
        return images[0]
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    width = max(i.width for i in images)
    height = max(i.height for i in images)
    grid = Image.new("RGB", (cols * width + (cols - 1) * gap, rows * height + (rows - 1) * gap))
    for index, image in enumerate(images):
        row, col = divmod(index, cols)
        grid.paste(image, (col * (width + gap), row * (height + gap)))
    return grid


def fit_under(png: bytes, image: Image.Image, max_bytes: int) -> bytes:
    """`png` if it fits in `max_bytes`, else a JPEG of `image` shrunk until it fits."""
    if len(png) <= max_bytes:
        return png
    scale = 1.0
    while scale > 0.05:
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        buffer = io.BytesIO()
        image.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(
            buffer, format="JPEG", quality=88
        )
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
        scale *= 0.75
    raise ValueError(f"cannot fit the image under {max_bytes} bytes")
