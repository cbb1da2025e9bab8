"""Images as compact JPEG/PNG bytes: what the query engine sends to a vision model and what
the notebook views embed as thumbnails.

`encode_image(path, max_side, ...)` opens the file through the same checks as ingestion
(pixel cap, SVG/HTML/corrupt files refused), applies the EXIF rotation, shrinks the image to
at most `max_side` px a side (never enlarges), and encodes it: PNG when it has transparency,
JPEG otherwise. With `max_bytes`, JPEG quality steps down (and a PNG too large is flattened
onto white and tried as JPEG) until the bytes fit. Results are cached per file version.
"""

from __future__ import annotations

import base64
import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

from PIL import Image

from rag.errors import RagError
from rag.media.images import DEFAULT_MAX_PIXELS, TooManyPixels, has_alpha, open_checked, to_rgb

DEFAULT_MAX_SIDE = 768
DEFAULT_QUALITIES = (85,)


class ImageUnusable(RagError):
    """An image file cannot be read, is too large to send, or cannot fit the byte budget."""


@dataclass(frozen=True)
class EncodedImage:
    """An image ready to embed or send: resized, compressed and base64-encoded (once)."""

    path: str
    mime: str
    b64: str
    width: int
    height: int

    @property
    def data_url(self) -> str:
        return f"data:{self.mime};base64,{self.b64}"


def encode_image(
    path: Union[str, Path],
    max_side: int = DEFAULT_MAX_SIDE,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: Optional[int] = None,
    qualities: Sequence[int] = DEFAULT_QUALITIES,
    draft: bool = False,
) -> EncodedImage:
    """Read an image, shrink it to at most `max_side` px a side and base64-encode it.

    `max_pixels` refuses images whose header claims more pixels (RAG_MAX_IMAGE_PIXELS);
    `max_bytes` is the budget for the encoded bytes, tried with each JPEG quality in
    `qualities` in turn; `draft` lets large JPEGs decode at a reduced scale (thumbnails).
    Raises `ImageUnusable` with the reason; cached per file version and options.
    """
    p = Path(path)
    try:
        stat = p.stat()
    except (OSError, ValueError) as exc:
        raise ImageUnusable(f"Cannot read image {p}: {getattr(exc, 'strerror', None) or exc}") from None
    return _encode_cached(
        str(p), stat.st_mtime_ns, stat.st_size, int(max_side), int(max_pixels), max_bytes, tuple(qualities), draft
    )


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, optimize=True, **options)
    return buf.getvalue()


def _fit(image: Image.Image, max_bytes: Optional[int], qualities: Tuple[int, ...]) -> Tuple[bytes, str]:
    """The encoded bytes and their MIME type, within `max_bytes` when it is given."""
    if has_alpha(image):
        data = _save(image.convert("RGBA"), "PNG")
        if max_bytes is None or len(data) <= max_bytes:
            return data, "image/png"
    rgb = to_rgb(image)
    for quality in qualities:
        data = _save(rgb, "JPEG", quality=quality)
        if max_bytes is None or len(data) <= max_bytes:
            return data, "image/jpeg"
    raise ImageUnusable(f"{image.width}x{image.height} px do not fit in {max_bytes:,} bytes")


@functools.lru_cache(maxsize=512)
def _encode_cached(
    path: str,
    _mtime: int,
    _size: int,
    max_side: int,
    max_pixels: int,
    max_bytes: Optional[int],
    qualities: Tuple[int, ...],
    draft: bool,
) -> EncodedImage:
    from PIL import ImageOps

    try:
        image = open_checked(Path(path), path, max_pixels, draft=(max_side * 2, max_side * 2) if draft else None)
        image = ImageOps.exif_transpose(image)
        if max(image.size) > max_side:
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        data, mime = _fit(image, max_bytes, qualities)
    except TooManyPixels as exc:
        raise ImageUnusable(
            f"Image {path} has {exc.width}x{exc.height} pixels, above the limit of {exc.limit} "
            "(RAG_MAX_IMAGE_PIXELS)."
        ) from None
    except ImageUnusable as exc:
        raise ImageUnusable(f"Cannot use image {path}: {exc}") from None
    except RagError as exc:  # BadInputError: its message starts with the path
        raise ImageUnusable(f"Cannot read image {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageUnusable(f"Cannot read image {path}: {exc}") from None
    b64 = base64.b64encode(data).decode("ascii")
    return EncodedImage(path=path, mime=mime, b64=b64, width=image.width, height=image.height)
