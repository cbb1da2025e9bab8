"""Finding the files to ingest and reading text files: pure functions over paths and bytes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from rag.media.images import IMAGE_SUFFIXES
from rag.corpus.manifest import MANIFEST_NAME
from rag.errors import BadInputError

TEXT_SUFFIXES = frozenset({".txt", ".md"})
# Picture formats people expect to work but that we cannot embed: reported, not ignored.
UNSUPPORTED_IMAGE_SUFFIXES = frozenset({".svg", ".svgz", ".heic", ".heif", ".avif", ".ico", ".eps", ".psd", ".raw"})


@dataclass(frozen=True)
class SourceFile:
    path: Path  # resolved
    modality: str  # "text" or "image"


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def classify(path: Path) -> Optional[str]:
    """'text', 'image', 'unsupported' (a picture we cannot read) or None (not ours: ignored)."""
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in UNSUPPORTED_IMAGE_SUFFIXES:
        return "unsupported"
    return None


def scan_paths(
    paths: Iterable[Path], listed: Optional[set] = None
) -> Tuple[List[SourceFile], List[Skipped], List[str]]:
    """Walk files and folders: (files to ingest, skipped with reasons, ignored paths).

    `listed` holds the resolved paths named by manifests; inside a folder that has a
    manifest, only the files it lists are ingested (its README and the like are not).
    """
    found: dict[Path, SourceFile] = {}
    skipped: List[Skipped] = []
    ignored: List[str] = []
    listed = listed or set()
    for root in paths:
        root = Path(root)
        if not root.exists():
            skipped.append(Skipped(str(root), "no such file or folder"))
            continue
        explicit = root.is_file()
        candidates = [root] if explicit else sorted(p for p in root.rglob("*") if p.is_file())
        for path in candidates:
            if any(part.startswith(".") for part in path.relative_to(root.parent if explicit else root).parts):
                continue  # hidden files and folders
            resolved = path.resolve()
            kind = classify(path)
            if path.name == MANIFEST_NAME:
                continue
            if not explicit and _under_manifest(path, root) and resolved not in listed:
                ignored.append(str(path))
                continue
            if kind == "unsupported":
                skipped.append(Skipped(str(path), f"unsupported format ({path.suffix.lower()}); convert it to PNG or JPEG"))
            elif kind is None:
                if explicit:
                    skipped.append(Skipped(str(path), f"unsupported file type {path.suffix or '(no extension)'!r}"))
                else:
                    ignored.append(str(path))
            else:
                found.setdefault(resolved, SourceFile(resolved, kind))
    return list(found.values()), skipped, ignored


def _under_manifest(path: Path, root: Path) -> bool:
    """True when a folder from `root` down to the file's folder holds a manifest."""
    folder = path.parent
    while True:
        if (folder / MANIFEST_NAME).is_file():
            return True
        if folder == root or folder == folder.parent:
            return False
        folder = folder.parent


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text (a BOM is allowed) or BadInputError saying where decoding failed."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{name}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); re-save it as UTF-8"
        ) from None
    if "\x00" in text:
        raise BadInputError(f"{name}: looks like a binary file (contains NUL bytes), not text")
    if not text.strip():
        raise BadInputError(f"{name}: empty text file")
    return text


def title_and_body(text: str, fallback: str) -> Tuple[str, str]:
    """A Markdown `# Title` first line becomes the title; otherwise the file's name does."""
    stripped = text.lstrip()
    first, _, rest = stripped.partition("\n")
    if first.startswith("# "):
        return first[2:].strip() or fallback, rest.strip() or first[2:].strip()
    return fallback, stripped.strip()
