"""What one server allows: address, token, ingest roots and the limits that keep it responsive."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Tuple

from rag.config import Settings, default

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) and `localhost`."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _d(name: str):
    """The declared default of a server setting (rag/config.py's table is the one source)."""
    return default(f"server_{name}")


@dataclass(frozen=True)
class ServerConfig:
    """What one server allows; `from_settings` builds it from the `RAG_SERVER_*` settings."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: Optional[str] = field(default=None, repr=False)  # None: no token needed (loopback only)
    allow_ingest: Tuple[Path, ...] = ()  # folders whose contents POST /api/ingest may index
    cors_origins: Tuple[str, ...] = ()  # empty: CORS off
    max_upload_bytes: int = _d("max_upload_bytes")
    max_upload_pixels: int = _d("max_upload_pixels")
    max_body_bytes: int = _d("max_body_bytes")  # any request body
    max_query_chars: int = 2000
    max_top_k: int = 100
    max_searches: int = _d("max_searches")  # searches running at once; more wait in line
    max_asks: int = _d("max_asks")  # answers streaming at once
    client_requests: int = _d("client_requests")  # API requests in flight per client address (0: no limit)
    queue_seconds: float = _d("queue_seconds")  # how long a request waits for a free slot before "busy" (503)
    search_seconds: float = _d("search_seconds")  # a search that takes longer is answered with 504
    body_seconds: float = _d("body_seconds")  # a request body that takes longer to arrive gets 408
    thumbnail_sizes: Tuple[int, ...] = (64, 128, 256, 512, 1024)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> "ServerConfig":
        """The server's settings (`RAG_SERVER_*`), with the command's options (not None) on top."""
        values = {name: getattr(settings, f"server_{name}") for name in _FROM_SETTINGS}
        values["token"] = settings.server_token
        roots = [r for r in (settings.server_allow_ingest or "").split(os.pathsep) if r]
        values["allow_ingest"] = tuple(Path(r) for r in roots)
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["allow_ingest"] = tuple(Path(p).expanduser().resolve() for p in values["allow_ingest"])
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides) -> "ServerConfig":
        """`from_settings` over `Settings.from_env(environ)`."""
        return cls.from_settings(Settings.from_env(environ), **overrides)


_FROM_SETTINGS = ("max_upload_bytes", "max_upload_pixels", "max_body_bytes", "max_searches", "max_asks",
                  "client_requests", "queue_seconds", "search_seconds", "body_seconds")
