"""`rag migrate`: convert an index from qdrant-client's local folder format to qdrant-edge
(--to edge), or build the lexical and caption signals of an index made before them (--signals)."""

from __future__ import annotations

import click

from rag.cli.common import emit_json, plural, settings_from, storage_options


@click.command("migrate")
@click.option("--to", "target", type=click.Choice(["edge"]), default=None,
              help="Target format (the embedded qdrant-edge engine) [default: edge, unless --signals alone].")
@click.option("--signals", is_flag=True,
              help="Build the BM25 and image-word signals from the index's own payloads (no image is embedded again).")
@click.option("--json", "as_json", is_flag=True, help="Print what was copied as JSON.")
@storage_options
def command(target, signals, as_json, storage, text_model, image_model) -> None:
    """Copy an index built with RAG_STORE=local (qdrant-client's folder) into qdrant-edge, and/or
    (--signals) build the lexical and caption signals of an index made before them.

    Vectors and payloads are copied as they are: nothing is embedded again. The old folder
    is kept as <storage>/qdrant.migrated; delete it once you are happy. --signals reads the
    passages and the images' words from the index and embeds only those words, with the text
    model that built the index.
    """
    settings = settings_from(storage, text_model, image_model)
    if signals and target is None:
        return _signals(settings, as_json)
    _convert(settings, target or "edge", as_json)
    if signals:
        _signals(settings, as_json)


def _signals(settings, as_json: bool) -> None:
    from rag.index.core import RagIndex
    from rag.index.signals import upgrade_signals

    with RagIndex(settings, check_models=False) as index:
        counts = upgrade_signals(index)
        where = (f"the index on the Qdrant server at {index.stores.location}" if index.stores.kind == "server"
                 else str(settings.storage))
    if as_json:
        emit_json({"storage": str(settings.storage), "signals": counts})
        return
    click.echo(f"Built the signals of {where}: {plural(counts['text'], 'passage')}, "
               f"{plural(counts['image'], 'image')} (no image embedded again).")


def _convert(settings, target: str, as_json: bool) -> None:
    # Not through RagService: it converts a storage folder that the service cannot open yet.
    from rag.stores.migrate import migrate_local_to_edge

    copied = migrate_local_to_edge(settings)
    kept = f"{settings.storage}/qdrant.migrated"
    if as_json:
        emit_json({"storage": str(settings.storage), "format": target, "copied": copied, "kept": kept})
        return
    total = ", ".join(plural(n, f"{name} point") for name, n in copied.items())
    click.echo(f"Migrated {settings.storage} to the {target} format: {total}. The old index is kept in {kept}.")
