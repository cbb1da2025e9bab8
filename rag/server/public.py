"""What a client on another machine sees of hits and answers: no file paths of the server.

A client on this machine (a loopback address) gets hits as `rag search --json` prints them:
its notebook displays images from their paths. Any other client gets, instead of each path,
the file's name (`file`, `source`, `metadata.file_path`) or, for an image, its media URL
(`image_path` = `/api/media/<node_id>`, which `RagClient` makes absolute). The same paths are
replaced in an answer's prompt, prompt parts and notes; `/api/info` names the storage folder
and model folders without their paths.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Dict, Iterable, List, Mapping, Optional
from urllib.parse import quote

from rag.server.config import is_loopback

MEDIA_PATH = "/api/media/"
_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]")


def is_local_peer(scope: Mapping[str, Any]) -> bool:
    """Whether the request came from this machine (a loopback address)."""
    client = scope.get("client")
    return bool(client) and is_loopback(str(client[0]))


def looks_like_path(text: Any) -> bool:
    """An absolute file path (POSIX or Windows), as opposed to a URL or a name."""
    return isinstance(text, str) and (text.startswith("/") or bool(_WINDOWS_ABSOLUTE.match(text)))


def file_name(path: str) -> str:
    """The last part of a POSIX or Windows path."""
    return (PureWindowsPath(path) if _WINDOWS_ABSOLUTE.match(path) else PurePosixPath(path)).name


def media_url(node_id: str) -> str:
    """Where a client fetches an indexed image (relative to the server)."""
    return MEDIA_PATH + quote(str(node_id), safe="")


def replacements(hits: Iterable[Mapping[str, Any]]) -> Dict[str, str]:
    """{server path: what a remote client sees instead} for the paths these hits name."""
    out: Dict[str, str] = {}
    for hit in hits:
        if hit.get("modality") == "image" and looks_like_path(hit.get("image_path")):
            out[hit["image_path"]] = media_url(hit.get("node_id", ""))
        for key in ("file", "source"):
            value = hit.get(key)
            if looks_like_path(value):
                out.setdefault(value, file_name(value))
        meta_path = (hit.get("metadata") or {}).get("file_path")
        if looks_like_path(meta_path):
            out.setdefault(meta_path, file_name(meta_path))
    return out


def public_hit(hit: Mapping[str, Any]) -> Dict[str, Any]:
    """A hit dict without server paths (see the module's docstring)."""
    out = dict(hit)
    if out.get("modality") == "image" and out.get("image_path") is not None:
        out["image_path"] = media_url(out.get("node_id", ""))
    for key in ("file", "source"):
        if looks_like_path(out.get(key)):
            out[key] = file_name(out[key])
    if isinstance(out.get("metadata"), dict):
        out["metadata"] = {k: file_name(v) if looks_like_path(v) else v for k, v in out["metadata"].items()}
    return out


def public_info(data: Mapping[str, Any]) -> Dict[str, Any]:
    """`/api/info` for a client on another machine: folder and model paths become their names.

    The folders the server lets clients ingest stay as they are (a client names a folder
    under one of them).
    """
    out = dict(data)
    for key in ("storage", "location"):
        if looks_like_path(out.get(key)):
            out[key] = file_name(out[key])
    if isinstance(out.get("models"), Mapping):
        out["models"] = {kind: file_name(name) if looks_like_path(name) else name
                         for kind, name in out["models"].items()}
    return out


def public_search(data: Mapping[str, Any]) -> Dict[str, Any]:
    """A SearchResult dict whose hits name no server path."""
    return {**data, "hits": [public_hit(h) for h in data.get("hits", [])]}


def _replace(text: Optional[str], table: Dict[str, str]) -> Optional[str]:
    if not text:
        return text
    for path in sorted(table, key=len, reverse=True):  # the longest first: no partial replacements
        text = text.replace(path, table[path])
    return text


def scrub_answer(data: Mapping[str, Any], local: bool, upload: Optional[tuple] = None) -> Dict[str, Any]:
    """An Answer dict for a client: the uploaded image's temporary path becomes its name for
    everyone; for a remote client (`local` False) every server path is replaced too.

    `upload`: (temporary path, shown name) of the image sent with the question, if any.
    """
    table: Dict[str, str] = {}
    if upload is not None:
        table[str(upload[0])] = upload[1]
    out = dict(data)
    if not local:
        table.update(replacements([*data.get("sources", []), *data.get("cited", [])]))
        out["sources"] = [public_hit(h) for h in data.get("sources", [])]
        out["cited"] = [public_hit(h) for h in data.get("cited", [])]
    if not table:
        return out
    out["prompt"] = _replace(data.get("prompt"), table)
    out["notes"] = [_replace(n, table) for n in data.get("notes", [])]
    if data.get("prompt_parts"):
        parts: List[Dict[str, Any]] = []
        for part in data["prompt_parts"]:
            part = dict(part)
            image = part.get("image")
            if isinstance(image, str):
                part["image"] = table.get(image, file_name(image) if not local and looks_like_path(image) else image)
            if isinstance(part.get("text"), str):
                part["text"] = _replace(part["text"], table)
            parts.append(part)
        out["prompt_parts"] = parts
    return out
