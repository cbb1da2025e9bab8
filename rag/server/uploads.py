"""Uploaded query images: capped in bytes and pixels, checked like ingested files, kept in a
private temporary file only while the request runs."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

from rag.errors import BadInputError
from rag.media.images import inspect_image_bytes

CHUNK = 64 * 1024


class UploadRejected(BadInputError):
    """An upload that is too large or is no usable image (HTTP 400 or 413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def read_capped(upload: Any, max_bytes: int) -> bytes:
    """All bytes of a Starlette UploadFile, refusing more than `max_bytes`."""
    parts, total = [], 0
    while True:
        chunk = await upload.read(CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise UploadRejected(f"the image is larger than the limit of {max_bytes:,} bytes", 413)
        parts.append(chunk)
    return b"".join(parts)


def _display_name(filename: Optional[str]) -> str:
    """A safe label for messages: the base name only, printable, at most 80 characters."""
    name = Path(filename or "image").name
    name = "".join(c for c in name if c.isprintable())[:80]
    return name or "image"


def check_image(data: bytes, filename: Optional[str], max_pixels: int) -> str:
    """The file extension for these bytes, or UploadRejected with the reason (as ingestion says it)."""
    name = _display_name(filename)
    if (filename or "").lower().endswith(".svg"):
        raise UploadRejected(f"{name}: SVG is a vector format; it is not supported (convert it to PNG)")
    try:
        info = inspect_image_bytes(data, name, max_pixels)
    except BadInputError as exc:
        raise UploadRejected(str(exc)) from None
    return info.extension


@contextlib.contextmanager
def temporary_image(data: bytes, extension: str, folder: Optional[Path] = None) -> Iterator[Path]:
    """Write checked bytes to a 0600 temporary file named by the server; removed afterwards."""
    fd, name = tempfile.mkstemp(prefix="rag-upload-", suffix=extension, dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        yield Path(name)
    finally:
        try:
            os.unlink(name)
        except OSError:
            pass
