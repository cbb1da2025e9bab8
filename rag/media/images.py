"""Image validation and normalisation: every image that reaches CLIP goes through here.

`open_image` turns a file into an RGB PIL image (EXIF rotation applied, CMYK, 16-bit,
palette and alpha images converted) or raises `BadInputError` with the reason.
`inspect_image_bytes` checks downloaded bytes before they are written to disk.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

from PIL import Image, ImageOps, UnidentifiedImageError

from rag.errors import BadInputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 64_000_000
# PIL format name -> the file extension we save it under.
FORMAT_EXTENSIONS = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "GIF": ".gif",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "TIFF": ".tiff",
    "MPO": ".jpg",
}


@dataclass(frozen=True)
class ImageInfo:
    """What the bytes really are, whatever their name claims."""

    format: str
    width: int
    height: int
    extension: str


class TooManyPixels(BadInputError):
    """An image whose header claims more pixels than the limit (a possible decompression bomb)."""

    def __init__(self, name: str, width: int, height: int, limit: int) -> None:
        super().__init__(name, f"{width}x{height} pixels is over the limit of {limit:,} (possible decompression bomb)")
        self.width, self.height, self.limit = width, height, limit


def has_alpha(image: Image.Image) -> bool:
    """Does the image carry transparency (alpha channel or a transparent palette entry)?"""
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def _looks_like_svg(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in head.lower())


def _looks_like_html(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def open_checked(
    source: Union[Path, io.BytesIO], name: str, max_pixels: int, draft: Optional[Tuple[int, int]] = None
) -> Image.Image:
    """Open and fully decode; map every PIL failure to a BadInputError naming the reason.

    `draft` (width, height): let JPEG decode at a reduced scale still at least that large.
    """
    if isinstance(source, Path):
        if source.suffix.lower() == ".svg":
            raise BadInputError(name, "SVG is a vector format; it is not supported (convert it to PNG)")
        size = source.stat().st_size
        if size == 0:
            raise BadInputError(name, "empty file (0 bytes)")
        with source.open("rb") as handle:
            head = handle.read(512)
    else:
        head = source.getvalue()[:512]
        if not head:
            raise BadInputError(name, "empty file (0 bytes)")
    if _looks_like_svg(head):
        raise BadInputError(name, "SVG is a vector format; it is not supported (convert it to PNG)")
    if _looks_like_html(head):
        raise BadInputError(name, "an HTML page, not an image")

    # Image.open reads only the header: check the size ourselves before any pixel is decoded.
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        image = Image.open(source)
        width, height = image.size
        if width * height > max_pixels:
            raise TooManyPixels(name, width, height, max_pixels)
        if draft is not None:
            image.draft(image.mode, draft)
        image.load()
    except UnidentifiedImageError:
        raise BadInputError(name, "not a recognised image format (corrupt or unsupported)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadInputError(name, f"corrupt or truncated image ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return image


def normalise(image: Image.Image) -> Image.Image:
    """Apply EXIF rotation and convert any mode (CMYK, I;16, P, RGBA, LA, ...) to RGB."""
    return to_rgb(ImageOps.exif_transpose(image))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode as RGB: 16-bit greyscale scaled to 8 bits, transparency flattened onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping to white.
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        top = float(array.max()) or 1.0
        return Image.fromarray((array * (255.0 / top)).astype("uint8"), mode="L").convert("RGB")
    if image.mode == "P" and has_alpha(image):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def open_image(path: Union[str, Path], max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image file as a normalised RGB image or raise BadInputError naming the file."""
    path = Path(path)
    image = open_checked(path, str(path), max_pixels)
    try:
        return normalise(image)
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"cannot convert image to RGB ({exc})") from None


def inspect_image_bytes(data: bytes, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Decode downloaded bytes fully and say what they are; BadInputError if they are no image."""
    image = open_checked(io.BytesIO(data), name, max_pixels)
    fmt = image.format or "UNKNOWN"
    extension = FORMAT_EXTENSIONS.get(fmt)
    if extension is None:
        raise BadInputError(name, f"image format {fmt} is not supported")
    return ImageInfo(format=fmt, width=image.width, height=image.height, extension=extension)
