"""The corpus manifest: `manifest.jsonl`, one JSON object per article and per image.

Every record has `kind` ("article" or "image") and `path` (relative to the manifest's
folder). Articles carry `title` and `url` (plus whatever the source knows: `page_id`,
`revision_id`, `fetched_at`); images carry the `title` and `url` of their article,
`caption`, and provenance (`source_url`, `sha256`, `bytes`, `license`, `attribution`, ...).
`rag ingest` copies these fields into node metadata so that hits carry titles and URLs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

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


def read_manifest(folder: Path) -> dict[Path, dict[str, Any]]:
    """Records of `folder/manifest.jsonl` keyed by the resolved path they describe ({} if absent)."""
    manifest = Path(folder) / MANIFEST_NAME
    if not manifest.is_file():
        return {}
    with manifest.open(encoding="utf-8") as handle:
        records = list(parse_manifest_lines(handle, origin=str(manifest)))
    return {(manifest.parent / r["path"]).resolve(): r for r in records}


def find_manifests(paths: Iterable[Path]) -> dict[Path, dict[str, Any]]:
    """Merge the manifests found in the given folders and every folder below them."""
    merged: dict[Path, dict[str, Any]] = {}
    for root in paths:
        root = Path(root)
        if root.is_file():
            root = root.parent
        candidates = [root / MANIFEST_NAME, *root.rglob(MANIFEST_NAME)] if root.is_dir() else []
        for manifest in dict.fromkeys(candidates):
            if manifest.is_file():
                merged.update(read_manifest(manifest.parent))
    return merged


def append_records(manifest: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records to a manifest file (one compact JSON object per line)."""
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with manifest.open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
