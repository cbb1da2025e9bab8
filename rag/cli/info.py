"""`rag info`: where the index lives, what it holds, which models built it."""

from __future__ import annotations

import click

from rag.cli.common import emit_json, plural, service_from, storage_options


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@storage_options
def command(as_json, storage, text_model, image_model) -> None:
    """Show collections, point counts, models and storage location (loads no model)."""
    click.get_current_context().meta["rag.loads_no_model"] = True  # no stand-in is chosen for it
    with service_from(storage, text_model, image_model) as service:
        info = service.info()
    if as_json:
        emit_json(info)
        return
    click.echo(f"Storage:  {info['storage']} ({info['store']}: {info['location']})")
    for kind, collection in info["collections"].items():
        unindexed = collection.get("unindexed", 0)
        scanned = f" ({unindexed} outside the HNSW graph, scanned exactly)" if unindexed else ""
        click.echo(f"{kind.capitalize():<9} collection {collection['name']!r}: {plural(collection['points'], 'point')}"
                   f"{scanned}, model {info['models'][kind]}")
    click.echo(f"Files:    {info['files']} indexed")
    signals = info.get("signals")
    if signals:
        click.echo(f"Signals:  BM25 over {signals['text']} passages; words and BM25 over {signals['image']} images")
    elif any(c["points"] for c in info["collections"].values()) and info["store"] != "server":
        click.echo("Signals:  none (an index built before them): rag migrate --signals adds them")
