"""The corpus manifest: `manifest.jsonl`, one JSON object per article and per image.

Every record has `kind` ("article" or "image") and `path` (relative to the manifest's
folder). Articles carry `title` and `url` (plus whatever the source knows: `page_id`,
`revision_id`, `fetched_at`); images carry the `title` and `url` of their article,
`caption`, and provenance (`source_url`, `sha256`, `bytes`, `license`, `attribution`, ...).
`rag ingest` copies these fields into node metadata so that hits carry titles and URLs.

`Manifest` is the one model of a manifest: `rag fetch` keeps its merged state in one and
saves it atomically; `read_manifest` and `find_manifests` read them back for ingestion.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Optional

from rag.corpus.atomic import write_atomic
from rag.errors import BadInputError

MANIFEST_NAME = "manifest.jsonl"


def parse_manifest_lines(lines: Iterable[str], origin: str = MANIFEST_NAME) -> Iterator[dict[str, Any]]:
    """Parse manifest lines; raise ValueError naming the line for a malformed record."""
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{origin}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or "path" not in record or "kind" not in record:
            raise ValueError(f"{origin}:{number}: a record needs 'kind' and 'path'")
        yield record


def normalise_path(path: str) -> str:
    """A record path in one spelling: forward slashes, no empty or `.` parts."""
    parts = [p for p in str(path).replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


class Manifest:
    """The records of one folder's manifest, keyed by their normalised relative path."""

    def __init__(self, folder: Path, records: Optional[Dict[str, dict[str, Any]]] = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST_NAME
        self.records: Dict[str, dict[str, Any]] = dict(records or {})

    @classmethod
    def load(cls, folder: Path) -> "Manifest":
        """The manifest of `folder` (empty when it has none); ValueError names a bad line."""
        manifest = cls(folder)
        if manifest.path.is_file():
            data = manifest.path.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = data[: exc.start].count(b"\n") + 1
                raise ValueError(f"{manifest.path}:{line}: not UTF-8 text") from None
            for record in parse_manifest_lines(text.split("\n"), origin=str(manifest.path)):
                manifest.records[normalise_path(record["path"])] = record
        return manifest

    def get(self, path: str) -> Optional[dict[str, Any]]:
        """The record for a relative path, if any."""
        return self.records.get(normalise_path(path))

    def put(self, record: dict[str, Any]) -> None:
        """Add or replace the record for `record["path"]`."""
        self.records[normalise_path(record["path"])] = record

    def drop(self, path: str) -> None:
        """Forget the record for a relative path (no error when absent)."""
        self.records.pop(normalise_path(path), None)

    def images_in(self, folder: str) -> dict[str, dict[str, Any]]:
        """Image records of one article folder, keyed by wiki file title (or file name)."""
        prefix = folder + "/"
        return {
            str(r.get("file_title") or r.get("file_name")): r
            for p, r in self.records.items()
            if r.get("kind") == "image" and p.startswith(prefix) and ".." not in p.split("/")
        }

    def by_resolved_path(self) -> dict[Path, dict[str, Any]]:
        """Records keyed by the resolved path of the file they describe."""
        return {(self.folder / r["path"]).resolve(): r for r in self.records.values()}

    def save(self) -> None:
        """Rewrite the manifest file atomically (one compact JSON object per line)."""
        lines = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in self.records.values())
        write_atomic(self.path, lines.encode("utf-8"))


def read_manifest(folder: Path) -> dict[Path, dict[str, Any]]:
    """Records of `folder/manifest.jsonl` keyed by the resolved path they describe ({} if absent)."""
    return Manifest.load(Path(folder)).by_resolved_path()


def find_manifests(paths: Iterable[Path]) -> dict[Path, dict[str, Any]]:
    """Merge the manifests found in the given folders and every folder below them.

    A malformed manifest stops the ingest with a BadInputError naming the file and line:
    ingesting its folder without it would silently drop the titles and URLs it holds.
    """
    merged: dict[Path, dict[str, Any]] = {}
    for root in paths:
        root = Path(root)
        if root.is_file():
            root = root.parent
        candidates = [root / MANIFEST_NAME, *root.rglob(MANIFEST_NAME)] if root.is_dir() else []
        for manifest in dict.fromkeys(candidates):
            if manifest.is_file():
                try:
                    merged.update(read_manifest(manifest.parent))
                except ValueError as exc:
                    raise BadInputError(f"{exc}; fix or delete that line (or the manifest), then ingest again") from None
                except OSError as exc:
                    raise BadInputError(manifest, f"cannot read it ({exc.strerror or exc})") from None
    return merged
