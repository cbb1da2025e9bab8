"""`rag search QUERY [--image PATH]`: one ranked list of passages and images, each hit explained."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import click

from rag.cli.common import LABELS, describe_filters, emit_json, filter_option, service_from, snippet, stderr, storage_options
from rag.types import SearchRequest

NOTHING_TO_SEARCH = "nothing to search for: give a text query, an image (--image PATH), or both"


def no_hits_message(service: Any, request: SearchRequest) -> str:
    """Why a search found nothing: an empty index, a filter that matches nothing, or neither."""
    info = service.info()
    if not any(c["points"] for c in info["collections"].values()):
        return f"No results: the index in {info['storage']} is empty (run `rag ingest PATH` first)."
    if not request.filters:
        return "No results."
    if len(request.filters) == 1:
        return f"No hits match the filter {describe_filters(request.filters)}."
    unmatched = {}
    for key, value in request.filters.items():  # which filter, alone, matches nothing?
        alone = SearchRequest(request.query, request.image, max(request.top_k, 1), max(request.image_top_k, 1), {key: value})
        if not service.search(alone).hits:
            unmatched[key] = value
    if unmatched:
        return f"No hits match the filter{'s' if len(unmatched) > 1 else ''} {describe_filters(unmatched)}."
    return f"No hits match all of the filters {describe_filters(request.filters)} together."


def explain(signals: Dict[str, Dict[str, float]]) -> str:
    """Which signals found a hit, with its rank and raw score in each: `dense #1 (0.564) · bm25 #1 (18.1)`."""
    return " · ".join(f"{name} #{int(v['rank'])} ({v['score']:.3g})" for name, v in signals.items())


def print_hits(hits) -> None:
    """Numbered hits: `[passage 0.812] Title <source>` plus a snippet, or `[image 0.301] Title: path`,
    then the signals that found it."""
    width = max(len(label) for label in LABELS.values())
    for rank, hit in enumerate(hits, start=1):
        title = hit.title or Path(hit.file or hit.source).name
        label = f"{LABELS[hit.modality]:<{width}}"
        if hit.modality == "text":
            click.echo(f"{rank:>2}. [{label} {hit.score:.3f}] {title}  <{hit.source}>")
            click.echo(f"      {snippet(hit.text)}")
        else:
            click.echo(f"{rank:>2}. [{label} {hit.score:.3f}] {title}: {hit.image_path}")
            if hit.text:
                click.echo(f"      {snippet(hit.text)}")
        if hit.signals:
            click.echo(f"      found by: {explain(hit.signals)}")


def search_json(request: SearchRequest, result: Any) -> Dict[str, Any]:
    """What `rag search --json` prints: the query as given, the hits, and notes if any."""
    return {"query": request.query, "image": request.image, "filters": request.filters, **result.to_dict()}


@click.command("search")
@click.argument("query", required=False, default="")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Query image: finds similar images (with QUERY: both).")
@click.option("--top-k", type=click.IntRange(min=0), default=5, show_default=True, help="Passages to return, at most.")
@click.option("--image-top-k", type=click.IntRange(min=0), default=3, show_default=True, help="Images to return, at most.")
@click.option("--limit", type=click.IntRange(min=1), help="Hits in all [default: --top-k plus --image-top-k].")
@click.option("--min-images", type=click.IntRange(min=0), default=0, show_default=True,
              help="Keep at least this many images in the list when any matched.")
@click.option("--signals", metavar="NAMES", help="Comma-separated signals to rank by "
              "(dense, bm25, clip, clip_image, words, words_bm25, article) [default: all].")
@click.option("--fusion", type=click.Choice(["dbsf", "rrf"]), help="How the signals are fused [default: dbsf].")
@click.option("--mmr", type=click.FloatRange(0, 1), help="Diversify passages with MMR (lambda 0-1; in the Qdrant engine).")
@filter_option
@click.option("--json", "as_json", is_flag=True, help='Print {"query", "image", "filters", "hits"} as JSON.')
@storage_options
def command(query, image, top_k, image_top_k, limit, min_images, signals, fusion, mmr, filters, as_json,
            storage, text_model, image_model) -> None:
    """Search the index by text (QUERY), by image (--image), or both: one list, best first.

    Passages and images are ranked together. Each hit says which signals found it: dense and
    bm25 (passages); clip, clip_image, words, words_bm25 and article (images: the query against
    the picture, the image's own words, and its article's passages). An image query also finds
    passages, through the articles of the images it matches.

    \b
    Examples:
      rag search "Who wrote one of the first compilers?"
      rag search --image rag/sample/images/domestic-cat-1.jpg --json
      rag search galaxies --filter title="Hubble Deep Field"
    """
    if not query.strip() and image is None:
        raise click.UsageError(NOTHING_TO_SEARCH)
    names = [n.strip() for n in signals.split(",") if n.strip()] if signals is not None else None
    request = SearchRequest(query=query, image=str(image) if image else None, top_k=top_k,
                            image_top_k=image_top_k, filters=dict(filters), limit=limit, min_images=min_images,
                            signals=names, fusion=fusion, mmr=mmr)
    with service_from(storage, text_model, image_model) as service:
        result = service.search(request)
        hits = result.hits
        message = no_hits_message(service, request) if not hits and not as_json else ""
    if as_json:
        emit_json(search_json(request, result))
        return
    for note in result.notes:
        stderr(f"Note: {note}")
    if message:
        click.echo(message)
    print_hits(hits)
