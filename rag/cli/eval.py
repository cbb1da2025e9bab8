"""`rag eval`: retrieval quality (Recall@K, MRR@10, nDCG@10) on labelled questions.

Three kinds of labelled data:

    rag eval rag/sample                        # a corpus folder with questions.json (the sample)
    rag eval --beir path/to/scifact            # corpus.jsonl, queries.jsonl, qrels/test.tsv
    rag eval --karpathy dataset_flickr30k.json --images flickr30k-images   # CLIP, both ways
    rag eval rag/sample --pictures             # image -> passages: each picture asks for its article

The corpus is indexed into a temporary storage with the configured models (or `--storage`
names an index already built from it). `--compare` runs every configuration in one go.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import click

from rag.cli.common import announce, choose_models, emit_json, settings_from, stderr, storage_options, user_errors


@click.command("eval")
@click.argument("corpus", required=False, type=click.Path(path_type=Path))
@click.option("--questions", type=click.Path(path_type=Path), help="Labelled questions [default: CORPUS/questions.json].")
@click.option("--beir", type=click.Path(path_type=Path), help="A BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")
@click.option("--karpathy", type=click.Path(path_type=Path), help="Karpathy's dataset_flickr30k.json or dataset_coco.json.")
@click.option("--images", "image_dir", type=click.Path(path_type=Path), help="With --karpathy: the image folder.")
@click.option("--split", default="test", show_default=True, help="BEIR qrels / Karpathy split to evaluate.")
@click.option("--max-images", type=click.IntRange(min=1), help="With --karpathy: only the first N images of the split.")
@click.option("--compare", is_flag=True, help="Run every configuration (dense, hybrid, fused, fused+mmr, no-captions, captions).")
@click.option("--config", "names", multiple=True, metavar="NAME", help="A configuration to run (repeatable) [default: fused].")
@click.option("--pictures", is_flag=True, help="Query with every picture of CORPUS (an altered copy) and score the "
              "passages of its article: the article link against CLIP text vectors of the passages.")
@click.option("--depth", type=click.IntRange(min=1), default=10, show_default=True,
              help="Hits per modality each query asks for (metrics stop at 10).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@storage_options
@user_errors
def command(corpus, questions, beir, karpathy, image_dir, split, max_images, compare, names, pictures, depth,
            as_json, storage, text_model, image_model) -> None:
    """Measure retrieval on labelled questions and print one table."""
    sources = [s for s in (corpus, beir, karpathy) if s is not None]
    if len(sources) != 1:
        raise click.UsageError("give exactly one of CORPUS, --beir FOLDER or --karpathy JSON")
    settings = settings_from(None, text_model, image_model)
    if karpathy is not None:
        return _karpathy(settings, karpathy, image_dir, split, max_images, as_json)

    from rag.eval.compare import configurations, unknown

    if pictures and (corpus is None or compare or names or questions):
        raise click.UsageError("--pictures takes a CORPUS folder, without --questions, --compare or --config")
    if compare and names:
        raise click.UsageError("--compare runs every configuration; leave out --config")
    bad = unknown(names)
    if bad:
        raise click.UsageError(f"unknown configuration {', '.join(bad)}: expected {', '.join(configurations())}")
    chosen = {n: s for n, s in configurations().items() if compare or n in (names or ("fused",))}
    with tempfile.TemporaryDirectory(prefix="rag-eval-") as work:
        if beir is not None:
            from rag.eval.datasets import load_beir

            data = load_beir(beir, split=split, workdir=Path(work) / "beir")
        elif pictures:
            from rag.eval.datasets import LabelledSet
            from rag.eval.pictures import PICTURE_CONFIGS

            if not Path(corpus).is_dir():
                raise click.UsageError(f"{corpus}: not a folder")
            data = LabelledSet(f"{Path(corpus).name} pictures", Path(corpus), [])  # queries: from the index
            chosen = dict.fromkeys(PICTURE_CONFIGS)
        else:
            from rag.eval.datasets import load_questions

            data = load_questions(corpus, questions)
        _run(data, settings, storage, chosen, depth, as_json, Path(work), pictures)


def _run(data: Any, settings: Any, storage: Optional[str], chosen: Dict[str, Any], depth: int, as_json: bool,
         work: Path, pictures: bool = False) -> None:
    from contextlib import nullcontext

    from rag.eval.compare import checks, describe, groups_in, table, to_json
    from rag.eval.runner import evaluate, temporary_index
    from rag.index.core import RagIndex
    from rag.search.retriever import Retriever

    # the models every command would use here: the index's own, else the configured ones, else stand-ins
    choice = choose_models(settings.with_overrides(storage=Path(storage) if storage else work / "storage"))
    announce(choice.notes)
    settings = choice.settings
    if storage:
        context: Any = nullcontext(RagIndex(settings, **choice.embeddings()))
    else:
        stderr(f"indexing {data.root} into a temporary storage ...")
        context = temporary_index(settings, data.root, progress=not as_json, embeddings=choice.embeddings())
    with context as index:
        try:
            retriever = Retriever(index)
            for note in retriever.notes():
                stderr(f"note: {note}")
            from rag.eval.compare import search_fn

            if pictures:
                from rag.eval.pictures import article_link_search, clip_text_search, picture_queries

                data.queries = picture_queries(index, data.root, work / "pictures")
                if not data.queries:
                    raise click.UsageError(f"{data.root}: no picture whose article has passages in the index")
                searches = {"article link": article_link_search(retriever), "clip text": clip_text_search(index)}
            else:
                searches = {n: search_fn(retriever, s) for n, s in chosen.items()}
            results = evaluate(data, searches, depth=depth, progress=not as_json)
        finally:
            if storage:
                index.close()
    if as_json:
        emit_json({"dataset": data.name, "queries": len(data.queries), "configs": to_json(results, data.queries, chosen)})
        return
    click.echo(f"{data.name}: {len(data.queries)} queries; text model {settings.text_model}, image model {settings.image_model}")
    for name in chosen:
        click.echo(f"  {name:<12} {describe(name)}")
    click.echo("")
    for line in table(results, groups_in(data.queries)):
        click.echo(line)
    click.echo("")
    for result in results:
        got = checks(result, data.queries)
        parts = []
        if got["passage_first"][1]:
            parts.append("relevant passage first: {}/{}".format(*got["passage_first"]))
        if got["image_in_top3"][1]:
            parts.append("a relevant image in the top 3: {}/{}".format(*got["image_in_top3"]))
        if parts:
            click.echo(f"{result.name:<12} " + "; ".join(parts))


def _karpathy(settings: Any, path: Path, image_dir: Optional[Path], split: str, max_images: Optional[int],
              as_json: bool) -> None:
    from rag.eval.datasets import load_karpathy
    from rag.eval.runner import evaluate_karpathy
    from rag.models.embeddings import load_image_embedding

    data = load_karpathy(path, image_dir, split=split, limit=max_images)
    stderr(f"{data.name} {split}: {len(data.images)} images, {len(data.captions)} captions; "
           f"embedding with {settings.image_model} ...")
    result = evaluate_karpathy(data, load_image_embedding(settings), progress=not as_json)
    if as_json:
        emit_json({"dataset": data.name, "split": split, "model": settings.image_model, **result})
        return
    click.echo(f"{data.name} {split} ({result['images']} images, {result['captions']} captions), {settings.image_model}")
    click.echo(f"{'direction':<12} {'R@1':>6} {'R@5':>6} {'R@10':>6}")
    for direction in ("text->image", "image->text"):
        row = result[direction]
        click.echo(f"{direction:<12} " + " ".join(f"{100 * row[k]:6.1f}" for k in ("R@1", "R@5", "R@10")))
