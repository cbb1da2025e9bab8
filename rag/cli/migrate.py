"""`rag migrate`: convert an index from qdrant-client's local folder format to qdrant-edge,
or give an index built before the lexical and caption signals those signals."""

from __future__ import annotations

import click

from rag.cli.common import settings_from, user_errors


@click.command("migrate")
@click.option("--storage", type=click.Path(file_okay=False), help="index folder [env RAG_STORAGE, default ./storage]")
@click.option("--to", "target", type=click.Choice(["edge"]), default=None,
              help="Target format (the embedded qdrant-edge engine).")
@click.option("--signals", is_flag=True,
              help="Build the BM25 and image-word signals from the index's own payloads (no image is embedded again).")
@user_errors
def command(storage, target, signals) -> None:
    """Copy an index built with RAG_STORE=local (qdrant-client's folder) into qdrant-edge
    (--to edge), and/or build the lexical and caption signals of an older index (--signals).

    Vectors and payloads are copied as they are: nothing is embedded again. The old folder
    is kept as <storage>/qdrant.migrated; delete it once you are happy. --signals reads the
    passages and the images' words from the index and embeds only those words, with the text
    model that built the index.
    """
    settings = settings_from(storage)
    if target is None and not signals:
        target = "edge"
    if target:
        from rag.stores.migrate import migrate_local_to_edge

        copied = migrate_local_to_edge(settings)
        total = ", ".join(f"{n} {name} points" for name, n in copied.items())
        click.echo(f"Migrated {settings.storage} to the {target} format: {total}. "
                   f"The old index is kept in {settings.storage}/qdrant.migrated.")
    if signals:
        from rag.index.core import RagIndex
        from rag.index.signals import upgrade_signals

        if settings.uses_server:
            raise click.ClickException("--signals needs an embedded index (RAG_QDRANT_URL is set): "
                                       "signals for Qdrant servers are not built yet")
        with RagIndex(settings, check_models=False) as index:
            counts = upgrade_signals(index)
        click.echo(f"Built the signals of {settings.storage}: {counts['text']} passages, {counts['image']} images "
                   "(no image embedded again).")
