"""`rag migrate`: convert an index in qdrant-client's local folder format to qdrant-edge."""

from __future__ import annotations

import click

from rag.cli.common import emit_json, plural, settings_from, storage_options


@click.command("migrate")
@click.option("--to", "target", type=click.Choice(["edge"]), default="edge", show_default=True,
              help="Target format (the embedded qdrant-edge engine).")
@click.option("--json", "as_json", is_flag=True, help="Print what was copied as JSON.")
@storage_options
def command(target, as_json, storage, text_model, image_model) -> None:
    """Copy an index built with RAG_STORE=local (qdrant-client's folder) into qdrant-edge.

    Vectors and payloads are copied as they are: nothing is embedded again. The old folder
    is kept as <storage>/qdrant.migrated; delete it once you are happy.
    """
    # Not through RagService: it converts a storage folder that the service cannot open yet.
    from rag.stores.migrate import migrate_local_to_edge

    settings = settings_from(storage, text_model, image_model)
    copied = migrate_local_to_edge(settings)
    kept = f"{settings.storage}/qdrant.migrated"
    if as_json:
        emit_json({"storage": str(settings.storage), "format": target, "copied": copied, "kept": kept})
        return
    total = ", ".join(plural(n, f"{name} point") for name, n in copied.items())
    click.echo(f"Migrated {settings.storage} to the {target} format: {total}. The old index is kept in {kept}.")
