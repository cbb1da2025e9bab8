"""What one server allows: address, token, ingest roots and the limits that keep it responsive."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Tuple

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerConfig:
    """Server settings; `from_env` reads RAG_SERVER_TOKEN and RAG_SERVER_ALLOW_INGEST."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: Optional[str] = field(default=None, repr=False)  # None: no token needed (loopback only)
    allow_ingest: Tuple[Path, ...] = ()  # folders whose contents POST /api/ingest may index
    cors_origins: Tuple[str, ...] = ()  # empty: CORS off
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_pixels: int = 40_000_000
    max_body_bytes: int = 12 * 1024 * 1024  # any request body
    max_query_chars: int = 2000
    max_top_k: int = 100
    max_searches: int = 8  # searches running at once; more wait in line
    max_asks: int = 2  # answers streaming at once
    queue_seconds: float = 10.0  # how long a request waits for a free slot before "busy" (503)
    search_seconds: float = 30.0  # a search that takes longer is answered with 504
    thumbnail_sizes: Tuple[int, ...] = (64, 128, 256, 512, 1024)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides) -> "ServerConfig":
        """Token and ingest roots from RAG_SERVER_TOKEN / RAG_SERVER_ALLOW_INGEST (os.pathsep-separated)."""
        env = os.environ if environ is None else environ
        values = {}
        if env.get("RAG_SERVER_TOKEN"):
            values["token"] = env["RAG_SERVER_TOKEN"]
        roots = [r for r in env.get("RAG_SERVER_ALLOW_INGEST", "").split(os.pathsep) if r]
        if roots:
            values["allow_ingest"] = tuple(Path(r) for r in roots)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "allow_ingest" in values:
            values["allow_ingest"] = tuple(Path(p).expanduser().resolve() for p in values["allow_ingest"])
        return cls(**values)
