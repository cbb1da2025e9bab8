"""`rag serve`: one process owns the index and serves the web page and the HTTP API."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from rag.cli.common import announce, choose_models, settings_from, storage_options, user_errors


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Any non-loopback address requires a token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port (0: any free one).")
@click.option("--allow-ingest", "allow_ingest", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Let clients ingest folders under DIR (repeatable) [env RAG_SERVER_ALLOW_INGEST].")
@click.option("--demo", is_flag=True,
              help="Serve the index `rag demo` builds, with the same models (stand-ins when the real ones "
                   "cannot be loaded); the bundled sample is indexed first if needed.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
@storage_options
@user_errors
def command(host, port, allow_ingest, demo, log_level, storage, text_model, image_model) -> None:
    """Serve the index: a search page at http://HOST:PORT/ and a JSON API (/docs).

    The models load once; `rag search`, `rag ask`, `rag info`, `rag ingest` and RagService in
    Python find the server through <storage>/server.json and go through it, so a notebook,
    a terminal and the page can use one index at the same time.

    \b
    Security: listens on 127.0.0.1 unless --host says otherwise; any other address needs a
    token (RAG_SERVER_TOKEN, or a random one written to <storage>/server.token, mode 0600).
    Limits (RAG_SERVER_* settings): concurrent searches and answers, each client address's
    share of them, body sizes and the time a request body may take to arrive.
    """
    from rag.demo import load_demo_models
    from rag.server.advert import check_not_running
    from rag.server.config import ServerConfig
    from rag.server.run import serve

    settings = settings_from(storage, text_model, image_model)
    config = ServerConfig.from_settings(settings, host=host, port=port, allow_ingest=allow_ingest or None)
    check_not_running(Path(settings.storage))  # before any model loads
    echo = lambda m: click.echo(m, err=True)  # noqa: E731
    choice = load_demo_models(settings) if demo else choose_models(settings)
    announce(choice.notes)
    service = demo_service(choice, echo) if demo else None
    serve(choice.settings, config, service=service, log_level=log_level, echo=echo,
          embeddings=None if demo else choice.embeddings())


def demo_service(choice: Any, echo: Callable[[str], None]) -> Any:
    """A service over the demo's index (the models the demo picks), with the sample indexed if needed."""
    from rag.demo import sample_corpus
    from rag.service import RagService

    service = RagService(choice.settings, no_server=True, **choice.embeddings())
    try:
        report = service.ingest([sample_corpus()])
    except BaseException:
        service.close()
        raise
    echo(f"The sample is indexed in {choice.settings.storage}: {report.points['text']} passages and "
         f"{report.points['image']} images ({report.files_indexed} new files).")
    return service
