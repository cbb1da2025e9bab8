"""Run the server: own the storage, load the models once, advertise, serve, clean up.

SIGTERM and Ctrl-C stop a running ingest after the commit group it is writing (the index
stays consistent), let open answers finish for a few seconds, close the storage and remove
the advertisement.
"""

from __future__ import annotations

import logging
from dataclasses import replace
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from rag.config import Settings
from rag.errors import RagError
from rag.server.advert import advertise, check_not_running, resolve_token, withdraw
from rag.server.config import ServerConfig
from rag.server.security import RedactingFilter

GRACE_SECONDS = 10  # open streams get this long to finish after a stop signal
LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "rag", "rag.server")


def bind(config: ServerConfig) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or RagError saying why not."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host.strip("[]"), config.port))
    except OSError as exc:
        sock.close()
        raise RagError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc} "
                       "(another program uses the port? choose one with --port)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def quiet_secrets(secrets: list) -> None:
    """Keep tokens and API keys out of every log line the server writes."""
    flt = RedactingFilter(secrets)
    for name in LOGGERS:
        logging.getLogger(name).addFilter(flt)


def serve(settings: Settings, config: ServerConfig, *, service: Any = None, log_level: str = "info",
          echo: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
          on_ready: Optional[Callable[[dict], None]] = None, embeddings: Optional[dict] = None) -> None:
    """Serve until stopped. Raises RagError (or StorageError) when it cannot start.

    `embeddings`: models already loaded (`text_embedding`, `image_embedding`) for the index.
    """
    storage = Path(settings.storage)
    check_not_running(storage)  # first: say so at once, before any slow import

    import uvicorn

    from rag.server.app import create_app
    from rag.service import RagService

    sock = bind(config)
    port = sock.getsockname()[1]
    config = replace(config, port=port)
    try:
        if service is None:
            service = RagService(settings, no_server=True, **(embeddings or {}))
            echo(f"Loading models ({service.settings.text_model}, {service.settings.image_model})...")
            for model in (service.index.text_embedding, service.index.image_embedding):  # now, not on a request
                getattr(model, "trace_graph", lambda: False)()  # rag.models.graph: a second each, paid here
        token, token_file = resolve_token(storage, config)
        quiet_secrets([token, settings.llm_api_key, settings.qdrant_api_key])
        app = create_app(service, config, token)
        advert = advertise(storage, config, token_file, token_required=bool(token))
    except BaseException:
        sock.close()
        if service is not None:
            service.close()
        raise

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.shutdown(timeout=0)  # the ingest stops after its current commit group
            super().handle_exit(sig, frame)
            # uvicorn would re-raise the signal once it stops, killing the process before the
            # storage is closed and the advertisement removed; we exit normally instead.
            getattr(self, "_captured_signals", []).clear()

    server = Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=GRACE_SECONDS,
                                   server_header=False, proxy_headers=False))
    echo(f"rag serve: {config.url} (storage {storage.resolve()}, pid {advert['pid']}); Ctrl-C stops it.")
    if token_file:
        echo(f"Clients need the token in {token_file} (readable by you only); the page asks for it.")
    elif token:
        echo("Clients need the token in RAG_SERVER_TOKEN; the page asks for it.")
    if config.allow_ingest:
        echo("Ingest allowed under: " + ", ".join(str(p) for p in config.allow_ingest))
    if on_ready is not None:
        on_ready(advert)
    try:
        server.run(sockets=[sock])
    finally:
        app.state.shutdown(timeout=60)
        service.close()
        withdraw(storage)
        sock.close()
        echo("rag serve: stopped; the index is closed.")
