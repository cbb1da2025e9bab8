"""`rag search QUERY [--image PATH]`: passages and images for a text and/or image query."""

from __future__ import annotations

from pathlib import Path

import click

from rag.cli.common import emit_json, settings_from, storage_options, user_errors


@click.command("search")
@click.argument("query", required=False, default="")
@click.option("--image", type=click.Path(path_type=Path), help="Query image: finds similar images (with QUERY: both).")
@click.option("--top-k", type=click.IntRange(min=0), default=5, show_default=True, help="Passages to return.")
@click.option("--image-top-k", type=click.IntRange(min=0), default=3, show_default=True, help="Images to return.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Only hits whose metadata KEY equals VALUE (e.g. title=Moon); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print hits as JSON.")
@storage_options
@user_errors
def command(query, image, top_k, image_top_k, filters, as_json, storage, text_model, image_model) -> None:
    """Search the index by text (QUERY), by image (--image), or both.

    Passages come from the text collection (BGE); images from the image collection (CLIP),
    matched against QUERY's meaning, the --image picture, or both together.
    """
    from rag.search.retriever import open_retriever

    metadata = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--filter")
        metadata[key] = value
    retriever = open_retriever(settings_from(storage, text_model, image_model))
    try:
        hits = retriever.search(query, image=image, top_k=top_k, image_top_k=image_top_k, filters=metadata or None)
    finally:
        retriever.index.close()
    if as_json:
        emit_json([hit.to_dict() for hit in hits])
        return
    if not hits:
        click.echo("No results (is the index empty? run `rag ingest PATH` first).")
    for rank, hit in enumerate(hits, start=1):
        title = hit.title or Path(hit.file or hit.source).name
        if hit.modality == "text":
            snippet = " ".join((hit.text or "").split())
            click.echo(f"{rank:>2}. [passage {hit.score:.3f}] {title}  <{hit.source}>")
            click.echo(f"      {snippet[:240]}{'…' if len(snippet) > 240 else ''}")
        else:
            click.echo(f"{rank:>2}. [image   {hit.score:.3f}] {title}: {hit.image_path}")
            if hit.text:
                click.echo(f"      {hit.text}")
