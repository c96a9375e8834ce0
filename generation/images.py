"""Checking input images (image-to-image uploads) before anything is queued.

A hostile upload can be huge, not an image at all, or a decompression bomb (a
small file that expands to gigapixels); each gets a clear refusal.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from generation.errors import InvalidRequest

MAX_INIT_BYTES = 20 * 1024 * 1024
MAX_INIT_PIXELS = 40_000_000
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


def inspect_image(
    data: bytes, *, max_bytes: int = MAX_INIT_BYTES, max_pixels: int = MAX_INIT_PIXELS
) -> tuple[int, int]:
    """The (width, height) of an uploaded image; `InvalidRequest` if it is unusable."""
    if len(data) > max_bytes:
        raise InvalidRequest(
            "image",
            f"the image is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                _check_header(image.format, image.size, max_pixels)
                # Decode now (the size is bounded): a corrupt or truncated file is refused
                # here, not after queueing, in the GPU thread.
                image.load()
                return image.size
    except UnidentifiedImageError as exc:
        raise InvalidRequest(
            "image",
            f"the attachment is not a readable image (sdbot reads {', '.join(FORMATS)})",
        ) from exc
    except (
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as exc:
        raise InvalidRequest("image", f"the attachment is not a readable image ({exc})") from exc


def _check_header(fmt: str | None, size: tuple[int, int], max_pixels: int) -> None:
    if fmt not in FORMATS:
        raise InvalidRequest(
            "image", f"image format must be one of {', '.join(FORMATS)}; got {fmt}"
        )
    width, height = size
    if width * height > max_pixels or width < 8 or height < 8:
        raise InvalidRequest(
            "image", f"image size must be between 8x8 and {max_pixels} pixels; got {width}x{height}"
        )
