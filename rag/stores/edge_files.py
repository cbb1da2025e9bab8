"""The files of an edge store directory besides the shard: the lock and the sidecar.

    .lock            flock()ed while a store object has the directory open; holds its pid
    rag_store.json   format version, dimension, distance (written by this package)
    shard/           the qdrant-edge shard itself (wal/, segments/, edge_config.json)

The engine itself takes a non-blocking lock on the WAL directory, so a second opener fails
with an opaque ``Can't init WAL: Kind(WouldBlock)``. The store takes its own ``flock`` on
``.lock`` first (which also covers the time before the shard exists) and turns both into a
:class:`rag.errors.StorageError` naming the directory and the holder's pid.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Optional

from rag.errors import StorageError

try:  # POSIX only; on other systems the engine's own WAL lock still applies.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

STORE_FORMAT = 1
META_FILE = "rag_store.json"
LOCK_FILE = ".lock"
SHARD_DIR = "shard"


def in_use_error(path: str, holder: str = "") -> StorageError:
    """The error for a directory that another process (``holder``: " (pid N)") holds."""
    return StorageError(
        f"The vector store at {path} is in use by another process{holder}. "
        "qdrant-edge allows one process at a time per directory: close the other "
        "process (or the other store object open on this directory) and retry, "
        "or use a different directory."
    )


REBUILD_HINT = ("move the index folder (RAG_STORAGE) aside and run `rag ingest` on your folders "
                "again to rebuild it; rag keeps no second copy to repair it from")


def damaged_error(path: str, detail: str) -> StorageError:
    """The error for a store directory whose files cannot be read back: names it and the fix."""
    detail = " ".join(str(detail).split())
    if len(detail) > 300:
        detail = detail[:297] + "..."
    return StorageError(f"The vector store at {path} is damaged ({detail}). To recover, {REBUILD_HINT}.")


def acquire_lock(path: str) -> Optional[IO[str]]:
    """Take the directory's exclusive, non-blocking flock and write our pid into it.

    Returns the open lock file (keep it: closing it releases the lock); raises StorageError
    naming the holder when another process or another store object in this one has it.
    """
    if fcntl is None:  # pragma: no cover
        return None
    handle = open(Path(path) / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        pid = handle.read().strip()
        handle.close()
        if pid == str(os.getpid()):
            raise StorageError(
                f"The vector store at {path} is already open in this process "
                f"(pid {pid}) by another store object; another process or object may "
                "not use it at the same time. Reuse that object or close() it first."
            ) from None
        raise in_use_error(path, f" (pid {pid})" if pid else "") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def release_lock(handle: Optional[IO[str]]) -> None:
    """Clear the pid and close the lock file, which drops the flock."""
    if handle is None:
        return
    try:
        handle.seek(0)
        handle.truncate()
        handle.flush()
    except OSError:  # pragma: no cover
        pass
    handle.close()


def read_meta(meta_path: Path) -> Optional[dict]:
    """The sidecar's contents; None when there is none yet; StorageError when unreadable."""
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise StorageError(
            f"Cannot read {meta_path}: {e}. The store directory is damaged; to recover, {REBUILD_HINT}."
        ) from None
    if not isinstance(meta, dict):
        raise StorageError(
            f"Cannot read {meta_path}: not a JSON object. The store directory is damaged; to recover, "
            f"{REBUILD_HINT}."
        )
    if meta.get("format") != STORE_FORMAT:
        raise StorageError(
            f"{meta_path} has store format {meta.get('format')!r}; this version "
            f"reads format {STORE_FORMAT}. Rebuild the index or upgrade rag."
        )
    return meta


def write_meta(meta_path: Path, dim: int) -> None:
    """Write the sidecar atomically (fsynced, then renamed into place)."""
    meta: dict[str, Any] = {"format": STORE_FORMAT, "engine": "qdrant-edge", "dim": dim, "distance": "cosine"}
    tmp = meta_path.with_suffix(".json.tmp")
    with open(tmp, "w") as fh:
        json.dump(meta, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, meta_path)


def dim_from_engine_config(shard_path: Path) -> Optional[int]:
    """The vector size recorded in the engine's own config, when the sidecar is lost."""
    try:
        cfg = json.loads((shard_path / "edge_config.json").read_text())
        return int(cfg["vectors"][""]["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
