"""The advertisement of a running server: `<storage>/server.json` and the 0600 token file.

Clients (`RagService`, `rag.client.connect`) read them through `rag.client.running_server`.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from rag import __version__
from rag.errors import StorageError
from rag.server.config import ServerConfig
from rag.client import SERVER_FILE, TOKEN_FILE, running_server


def check_not_running(storage: Path) -> None:
    """Raise StorageError naming the server that already owns `storage` (stale ones are removed)."""
    advert = running_server(storage)
    if advert is not None and int(advert["pid"]) != os.getpid():
        raise StorageError(
            f"a rag server already owns {storage}: pid {advert['pid']} at {advert['url']}. "
            "Use it (rag commands and RagService go through it), or stop it first "
            f"(kill {advert['pid']})."
        )


def _write_private(path: Path, text: str, mode: int) -> None:
    """Write atomically with the given permission bits (set before any byte is written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def resolve_token(storage: Path, config: ServerConfig) -> Tuple[Optional[str], Optional[Path]]:
    """(token, token file) for this server.

    RAG_SERVER_TOKEN (config.token) wins and is written nowhere. Otherwise a loopback server
    needs none, and any other address gets a fresh random token in `<storage>/server.token` (0600).
    """
    if config.token:
        return config.token, None
    if config.loopback:
        return None, None
    token = secrets.token_urlsafe(32)
    path = Path(storage) / TOKEN_FILE
    _write_private(path, token + "\n", 0o600)
    return token, path


def advertise(storage: Path, config: ServerConfig, token_file: Optional[Path], token_required: bool) -> Dict[str, Any]:
    """Write `<storage>/server.json` (no secret in it) and return what was written."""
    data = {
        "url": config.url,
        "pid": os.getpid(),
        "host": config.host,
        "port": config.port,
        "storage": str(Path(storage).resolve()),
        "token_required": token_required,
        "token_file": str(token_file) if token_file else None,
        "started": time.time(),
        "version": __version__,
    }
    _write_private(Path(storage) / SERVER_FILE, json.dumps(data, indent=1) + "\n", 0o644)
    return data


def withdraw(storage: Path) -> None:
    """Remove this process's advertisement and generated token file (another's is left alone)."""
    path = Path(storage) / SERVER_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if data.get("pid") != os.getpid():
        return
    for name in (SERVER_FILE, TOKEN_FILE):
        target = Path(storage) / name
        if name == TOKEN_FILE and str(target) != str(data.get("token_file")):
            continue
        try:
            target.unlink()
        except OSError:
            pass
