"""`rag search QUERY [--image PATH]`: passages and images for a text and/or image query."""

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


def print_hits(hits) -> None:
    """Numbered hits: `[passage 0.812] Title <source>` plus a snippet, or `[image 0.301] Title: path`."""
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


def search_json(request: SearchRequest, result: Any) -> Dict[str, Any]:
    """What `rag search --json` prints: the query as given, the hits, and notes if any."""
    return {"query": request.query, "image": request.image, "filters": request.filters, **result.to_dict()}


@click.command("search")
@click.argument("query", required=False, default="")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Query image: finds similar images (with QUERY: both).")
@click.option("--top-k", type=click.IntRange(min=0), default=5, show_default=True, help="Passages to return.")
@click.option("--image-top-k", type=click.IntRange(min=0), default=3, show_default=True, help="Images to return.")
@filter_option
@click.option("--json", "as_json", is_flag=True, help='Print {"query", "image", "filters", "hits"} as JSON.')
@storage_options
def command(query, image, top_k, image_top_k, filters, as_json, storage, text_model, image_model) -> None:
    """Search the index by text (QUERY), by image (--image), or both.

    Passages come from the text collection (BGE); images from the image collection (CLIP),
    matched against QUERY's meaning, the --image picture, or both together.

    \b
    Examples:
      rag search "Who wrote one of the first compilers?"
      rag search --image rag/sample/images/domestic-cat-1.jpg --json
      rag search galaxies --filter title="Hubble Deep Field"
    """
    if not query.strip() and image is None:
        raise click.UsageError(NOTHING_TO_SEARCH)
    request = SearchRequest(query=query, image=str(image) if image else None, top_k=top_k,
                            image_top_k=image_top_k, filters=dict(filters))
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
