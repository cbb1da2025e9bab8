"""`rag serve`: one process owns the index and serves the web page and the HTTP API."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from rag.cli.common import settings_from, storage_options, user_errors


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
    from rag.server.config import ServerConfig
    from rag.server.run import serve

    settings = settings_from(storage, text_model, image_model)
    echo = lambda m: click.echo(m, err=True)  # noqa: E731
    service = None
    if demo:
        settings, service = demo_service(settings, echo)
    config = ServerConfig.from_settings(settings, host=host, port=port, allow_ingest=allow_ingest or None)
    serve(settings, config, service=service, log_level=log_level, echo=echo)


def demo_service(settings: Any, echo: Callable[[str], None]) -> tuple:
    """(settings, service) over the demo's index: its models (or stand-ins), the sample indexed."""
    from rag.demo import load_demo_models, sample_corpus
    from rag.server.advert import check_not_running
    from rag.service import RagService

    echo("Loading the demo's models...")
    demo = load_demo_models(settings)
    for note in demo.notes:
        click.secho(f"note: {note}", fg="yellow", err=True)
    check_not_running(Path(demo.settings.storage))  # before opening the storage a server may own
    service = RagService(demo.settings, text_embedding=demo.text, image_embedding=demo.image, no_server=True)
    try:
        report = service.ingest([sample_corpus()])
    except BaseException:
        service.close()
        raise
    echo(f"The sample is indexed in {demo.settings.storage}: {report.points['text']} passages and "
         f"{report.points['image']} images ({report.files_indexed} new files).")
    return demo.settings, service
