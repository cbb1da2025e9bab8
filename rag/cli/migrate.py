"""`rag migrate`: convert an index in qdrant-client's local folder format to qdrant-edge."""

from __future__ import annotations

import click

from rag.cli.common import settings_from, user_errors


@click.command("migrate")
@click.option("--storage", type=click.Path(file_okay=False), help="index folder [env RAG_STORAGE, default ./storage]")
@click.option("--to", "target", type=click.Choice(["edge"]), default="edge", show_default=True,
              help="Target format (the embedded qdrant-edge engine).")
@user_errors
def command(storage, target) -> None:
    """Copy an index built with RAG_STORE=local (qdrant-client's folder) into qdrant-edge.

    Vectors and payloads are copied as they are: nothing is embedded again. The old folder
    is kept as <storage>/qdrant.migrated; delete it once you are happy.
    """
    from rag.stores.migrate import migrate_local_to_edge

    settings = settings_from(storage)
    copied = migrate_local_to_edge(settings)
    total = ", ".join(f"{n} {name} points" for name, n in copied.items())
    click.echo(f"Migrated {settings.storage} to the {target} format: {total}. "
               f"The old index is kept in {settings.storage}/qdrant.migrated.")
