"""`rag search QUERY [--image PATH]`: one ranked list of passages and images, each hit explained."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import click

from rag.cli.common import emit_json, settings_from, stderr, storage_options, user_errors


def explain(signals: Dict[str, Dict[str, float]]) -> str:
    """One line saying which signals found a hit, at what rank and with what score."""
    parts = [f"{name} #{int(v['rank'])} ({v['score']:.3g})" for name, v in signals.items()]
    return " · ".join(parts)


def fusion_from(signals: Any, fusion: Any, mmr: Any) -> Any:
    """Fusion settings from the command's options (None: the defaults)."""
    from dataclasses import replace

    from rag.search.signals import FusionSettings

    if signals is None and fusion is None and mmr is None:
        return None
    settings = FusionSettings()
    if signals:
        names = [n.strip() for n in signals.split(",") if n.strip()]
        try:
            settings = settings.using(*names)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--signals") from None
    if fusion:
        settings = replace(settings, method=fusion)
    if mmr is not None:
        settings = replace(settings, mmr=mmr)
    return settings


@click.command("search")
@click.argument("query", required=False, default="")
@click.option("--image", type=click.Path(path_type=Path), help="Query image: finds similar images (with QUERY: both).")
@click.option("--top-k", type=click.IntRange(min=0), default=5, show_default=True, help="Passages to return, at most.")
@click.option("--image-top-k", type=click.IntRange(min=0), default=3, show_default=True, help="Images to return, at most.")
@click.option("--limit", type=click.IntRange(min=1), help="Hits in all [default: --top-k plus --image-top-k].")
@click.option("--min-images", type=click.IntRange(min=0), default=0, show_default=True,
              help="Keep at least this many images in the list when any matched.")
@click.option("--signals", metavar="NAMES", help="Comma-separated signals to use "
              "(dense, bm25, clip, clip_image, words, words_bm25, article) [default: all].")
@click.option("--fusion", type=click.Choice(["dbsf", "rrf"]), help="How signals are fused [default: dbsf].")
@click.option("--mmr", type=click.FloatRange(0, 1), help="Diversify passages with MMR (lambda 0-1; qdrant-edge).")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Only hits whose metadata KEY equals VALUE (e.g. title=Moon); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print hits as JSON (with each signal's rank and score).")
@storage_options
@user_errors
def command(query, image, top_k, image_top_k, limit, min_images, signals, fusion, mmr, filters, as_json,
            storage, text_model, image_model) -> None:
    """Search the index by text (QUERY), by image (--image), or both: one list, best first.

    Passages and images are ranked together. Each hit says which signals found it: dense and
    bm25 (passages); clip, clip_image, words, words_bm25 and article (images: the query against
    the picture, the image's own words, and its article's passages). An image query also
    finds passages, through the articles of the images it matches.
    """
    from rag.search.retriever import open_retriever

    metadata = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--filter")
        metadata[key] = value
    settings = fusion_from(signals, fusion, mmr)
    retriever = open_retriever(settings_from(storage, text_model, image_model))
    try:
        for note in retriever.notes():
            stderr(f"note: {note}")
        hits = retriever.search(query, image=image, top_k=top_k, image_top_k=image_top_k, filters=metadata or None,
                                limit=limit, min_images=min_images, fusion=settings)
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
        if hit.signals:
            click.echo(f"      found by: {explain(hit.signals)}")
