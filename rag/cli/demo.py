"""`rag demo`: build the index from the bundled sample corpus and run example searches."""

from __future__ import annotations

from pathlib import Path

import click

from rag.cli.common import settings_from, storage_options, user_errors


def _show(title: str, hits) -> None:
    click.secho(f"\n{title}", bold=True)
    for rank, hit in enumerate(hits, start=1):
        what = " ".join((hit.text or "").split())[:110] if hit.modality == "text" else hit.image_path
        click.echo(f"  {rank}. [{hit.modality} {hit.score:.3f}] {hit.title}: {what}")


@click.command("demo")
@click.option("--corpus", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Corpus folder [default: the sample bundled with the package].")
@storage_options
@user_errors
def command(corpus, storage, text_model, image_model) -> None:
    """Index the bundled sample corpus, then search it by text, by image and by both.

    Uses RAG_TEXT_MODEL / RAG_IMAGE_MODEL (BGE and CLIP by default). When they cannot be
    loaded (offline, nothing cached) it says so and uses stand-ins in a separate index.
    """
    from rag.demo import demo_questions, first_image, load_demo_models, sample_corpus
    from rag.service import RagService

    corpus = corpus or sample_corpus()
    demo = load_demo_models(settings_from(storage, text_model, image_model))
    for note in demo.notes:
        click.secho(f"note: {note}", fg="yellow", err=True)
    with RagService(demo.settings, text_embedding=demo.text, image_embedding=demo.image) as rag:
        report = rag.ingest([corpus], progress=True)
        click.echo(f"Indexed {corpus}: {report.points['text']} passages and {report.points['image']} images "
                   f"in {demo.settings.storage} ({report.files_indexed} new files, {report.unchanged} unchanged, "
                   f"{report.seconds:.1f} s).")
        for question in demo_questions(corpus):
            _show(f"rag search {question!r}", rag.search(question, top_k=2, image_top_k=1).hits)
        image = first_image(corpus)
        _show(f"rag search --image {image} --top-k 1", rag.search(image=image, top_k=1, image_top_k=3).hits)
        _show(f"rag search 'a photograph' --image {image}",
              rag.search("a photograph", image=image, top_k=1, image_top_k=2).hits)
    click.echo("\nTry your own: rag search 'your question' [--image PATH] [--json]")
