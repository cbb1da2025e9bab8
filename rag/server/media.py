"""GET /api/media/{node_id}: an indexed image by its node id (never by a path a client names).

The id is looked up in the image collection; the file it names must still be in the index's
ledger, and its bytes pass the same checks as ingestion before they are served.
"""

from __future__ import annotations

import functools
import io
import re
from pathlib import Path
from typing import Any, Optional, Tuple

from rag.errors import BadInputError
from rag.media.images import open_image

NODE_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp",
        "TIFF": "image/tiff", "MPO": "image/jpeg"}


class MediaNotFound(LookupError):
    """No indexed image has this id."""


def image_file(index: Any, node_id: str) -> Path:
    """The file of the indexed image `node_id`, or MediaNotFound."""
    if not NODE_ID.match(node_id or ""):
        raise MediaNotFound(node_id)
    store = index.stores.image
    try:
        nodes = store.get_nodes(node_ids=[node_id])
    except Exception:  # an empty or missing collection
        nodes = []
    if not nodes:
        raise MediaNotFound(node_id)
    node = nodes[0]
    path = getattr(node, "image_path", None) or (node.metadata or {}).get("file_path")
    if not path or str(path) not in index.ledger.files:
        raise MediaNotFound(node_id)
    path = Path(path)
    if not path.is_file():
        raise MediaNotFound(node_id)
    return path


def render(path: Path, size: Optional[int], max_pixels: int) -> Tuple[bytes, str]:
    """(bytes, content type): the file itself, or a thumbnail at most `size` px a side."""
    stat = path.stat()
    return _render_cached(str(path), stat.st_mtime_ns, stat.st_size, size, max_pixels)


@functools.lru_cache(maxsize=512)
def _render_cached(path: str, _mtime: int, _size: int, size: Optional[int], max_pixels: int) -> Tuple[bytes, str]:
    from PIL import Image

    if size is None:
        open_image(path, max_pixels)  # bombs, corrupt files, HTML/SVG in disguise: BadInputError
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format or ""
        if fmt not in MIME:
            raise BadInputError(f"{Path(path).name}: image format {fmt or 'unknown'} cannot be served")
        return data, MIME[fmt]
    image = open_image(path, max_pixels)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return buf.getvalue(), "image/jpeg"
