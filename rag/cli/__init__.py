"""The `rag` command: a thin layer that parses options, calls the library and prints.

Each subcommand lives in its own module and registers itself on `main`.
"""

from __future__ import annotations

import click

from rag import __version__
from rag.cli.common import RagGroup


@click.group(cls=RagGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rag")
def main() -> None:
    """Multimodal RAG: index articles with pictures, search them by text or image, ask questions.

    Settings come from RAG_* environment variables (RAG_STORAGE, RAG_TEXT_MODEL,
    RAG_IMAGE_MODEL, RAG_QDRANT_URL, RAG_QDRANT_API_KEY, RAG_LLM, ...); options override them.

    Usage errors exit with status 2, other errors with 1. With --json, results and errors
    are JSON objects on stdout. Shell completion: eval "$(_RAG_COMPLETE=bash_source rag)".
    """


def _register() -> None:
    import importlib

    for name in ("ingest", "search", "info", "fetch", "ask", "demo", "migrate", "serve", "eval"):
        main.add_command(importlib.import_module(f"rag.cli.{name}").command)


_register()
