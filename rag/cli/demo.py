"""`rag demo`: build the default index from the bundled sample corpus and run example searches."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import click

from rag.cli.common import LABELS, announce, plural, settings_from, show_progress, snippet, storage_options, user_errors

SERVE_URL = "http://127.0.0.1:8765/"


def shown_path(path: Path, cwd: Optional[Path] = None) -> str:
    """A path as the user types it: relative when under the current folder, else absolute."""
    path = Path(os.path.abspath(path))
    here = Path(os.path.abspath(cwd or os.getcwd()))
    try:
        return str(path.relative_to(here))
    except ValueError:
        return str(path)


def rag_command(argv0: Optional[str] = None, executable: Optional[str] = None,
                which: Callable[[str], Optional[str]] = shutil.which, cwd: Optional[Path] = None) -> str:
    """How to run this same `rag` from the user's shell: `rag` when that is the one on PATH, else
    its path (`make demo` runs `.venv/bin/rag` without an activated venv), else `python -m rag`."""
    argv0 = argv0 if argv0 is not None else sys.argv[0]
    executable = executable or sys.executable
    script = Path(argv0) if Path(argv0).name in ("rag", "rag.exe") else Path(executable).with_name("rag")
    if not script.is_file():
        return f"{shlex.quote(shown_path(Path(executable), cwd))} -m rag"
    on_path = which("rag")
    if on_path and os.path.abspath(on_path) == os.path.abspath(script):
        return "rag"
    return shlex.quote(shown_path(script, cwd))


def next_commands(rag: str, question: str, image: Path, ask: str, options: Sequence[str] = (),
                  cwd: Optional[Path] = None) -> List[str]:
    """The commands the demo ends with, ready to paste (`options` repeat the demo's own)."""
    extra = "".join(f" {shlex.quote(o)}" for o in options)
    return [
        f"{rag} search {shlex.quote(question)}{extra}",
        f"{rag} search --image {shlex.quote(shown_path(image, cwd))}{extra}",
        f"{rag} ask {shlex.quote(ask)}{extra}",
        f"{rag} serve{extra}   # a search page at {SERVE_URL}",
    ]


def show_hits(title: str, hits) -> None:
    """A demo search: its command line, then one line per hit, labelled as `rag search` labels them."""
    click.secho(f"\n{title}", bold=True)
    width = max(len(label) for label in LABELS.values())
    for rank, hit in enumerate(hits, start=1):
        what = snippet(hit.text, 110) if hit.modality == "text" else hit.image_path
        click.echo(f"  {rank}. [{LABELS[hit.modality]:<{width}} {hit.score:.3f}] {hit.title}: {what}")


@click.command("demo")
@click.option("--corpus", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Corpus folder [default: the sample bundled with the package].")
@storage_options
@user_errors
def command(corpus, storage, text_model, image_model) -> None:
    """Index the bundled sample corpus into the index (./storage by default), then search it
    by text, by image and by both, and print commands to go on with.

    Models are chosen as for every command: those the index records, else RAG_TEXT_MODEL /
    RAG_IMAGE_MODEL (BGE and CLIP by default). When these cannot be loaded (offline, nothing
    cached) it says so and uses stand-ins, which the index then remembers: plain `rag search`,
    `rag ask` and `rag serve` use them afterwards.
    """
    from rag.demo import demo_questions, first_image, load_demo_models, other_files, sample_corpus
    from rag.server.advert import check_not_running
    from rag.service import RagService

    corpus = corpus or sample_corpus()
    settings = settings_from(storage, text_model, image_model)
    check_not_running(Path(settings.storage))  # the demo writes to the index: a `rag serve` must not own it
    demo = load_demo_models(settings)
    announce(demo.notes)
    where = demo.settings.storage
    others = other_files(demo.settings, corpus)
    if others:
        announce([f"the index in {where} already holds {plural(others, 'other file')}; the sample is added to them"])
    with RagService(demo.settings, no_server=True, **demo.embeddings()) as rag:
        report = rag.ingest([corpus], progress=show_progress())
        click.echo(f"Indexed {corpus}: {plural(report.points['text'], 'passage')} and "
                   f"{plural(report.points['image'], 'image')} in {where} ({plural(report.files_indexed, 'new file')}, "
                   f"{report.unchanged} unchanged, {report.seconds:.1f} s).")
        questions = demo_questions(corpus)
        for question in questions:
            show_hits(f"rag search {shlex.quote(question)}", rag.search(question, top_k=2, image_top_k=1).hits)
        image = first_image(corpus)
        shown = shlex.quote(shown_path(image))
        show_hits(f"rag search --image {shown} --top-k 1", rag.search(image=image, top_k=1, image_top_k=3).hits)
        show_hits(f"rag search 'a photograph' --image {shown}",
                  rag.search("a photograph", image=image, top_k=1, image_top_k=2).hits)
    options = [item for flag, value in (("--storage", storage), ("--text-model", text_model),
                                        ("--image-model", image_model)) if value for item in (flag, str(value))]
    click.echo(f"\nNext: the index in {where} is the one these commands use; paste them as they are:")
    for line in next_commands(rag_command(), questions[0], image, questions[min(1, len(questions) - 1)], options):
        click.echo(f"  {line}")
