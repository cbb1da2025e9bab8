"""Run labelled queries through search configurations and score them (what `rag eval` prints).

A configuration is a function from a query to hits (best first, one list across modalities).
Each query is scored three ways: the whole list ("fused"), its passages only ("text") and
its images only ("image"); a view counts only the queries that have a relevant item in it.
Hits become labels as the loaders key them: the hit's file relative to the corpus folder
(passages of one article count once, at the first one), or the BEIR document id.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from rag.errors import BadInputError
from rag.eval.datasets import EvalQuery, KarpathySet, LabelledSet
from rag.eval.metrics import first_relevant_rank, mean_scores, score_query

SearchFn = Callable[[EvalQuery, int], Sequence[Any]]  # (query, depth) -> hits, best first
VIEWS = ("fused", "text", "image")
KS = (1, 3, 5, 10)


def label_for(modality: str, file: str, root: Path, doc_ids: Optional[Mapping[str, str]] = None) -> str:
    """The label of a file: `<modality>:<path relative to root>` (or `text:<BEIR doc id>`)."""
    path = Path(file)
    try:
        rel = path.resolve().relative_to(Path(root).resolve()).as_posix()
    except (ValueError, OSError):
        rel = path.name
    if doc_ids and rel in doc_ids:
        rel = doc_ids[rel]
    return f"{modality}:{rel}"


def hit_key(hit: Any, root: Path, doc_ids: Optional[Mapping[str, str]] = None) -> str:
    """The label of a hit (`label_for` its file)."""
    return label_for(hit.modality, hit.file or hit.image_path or hit.source or "", root, doc_ids)


@dataclass
class QueryResult:
    """One query under one configuration: its ranked labels and the first relevant rank per view."""

    id: str
    ranking: List[str]
    first_rank: Dict[str, int]
    scores: Dict[str, Dict[str, float]]
    seconds: float


@dataclass
class ConfigResult:
    """Mean metrics of one configuration, per group of queries and per view."""

    name: str
    queries: List[QueryResult] = field(default_factory=list)
    means: Dict[str, Dict[str, Dict[str, float]]] = field(default_factory=dict)  # group -> view -> metric
    counts: Dict[str, Dict[str, int]] = field(default_factory=dict)  # group -> view -> queries scored
    p50_ms: float = 0.0


def groups_of(query: EvalQuery) -> List[str]:
    """The groups a query is averaged in: all, its set, and its kind within the set."""
    out = ["all"]
    if query.set:
        out.append(query.set)
        if query.kind:
            out.append(f"{query.set}/{query.kind}")
    return out


def score_ranking(query: EvalQuery, ranking: Sequence[str], ks: Sequence[int] = KS) -> Dict[str, Dict[str, float]]:
    """Metrics of one ranking of labels for each view that has relevant items."""
    out: Dict[str, Dict[str, float]] = {}
    for view in VIEWS:
        relevant = query.relevant if view == "fused" else query.relevant_in(view)
        if not relevant:
            continue
        ranked = ranking if view == "fused" else [key for key in ranking if key.startswith(f"{view}:")]
        out[view] = score_query(ranked, relevant, ks)
    return out


def evaluate(data: LabelledSet, configs: Mapping[str, SearchFn], depth: int = 20, ks: Sequence[int] = KS,
             progress: bool = False) -> List[ConfigResult]:
    """Score every configuration on every query of `data`."""
    from tqdm.auto import tqdm

    results = []
    total = len(configs) * len(data.queries)
    bar = tqdm(total=total, desc="eval", unit="query", disable=not progress, leave=False)
    try:
        for name, search in configs.items():
            bar.set_postfix_str(name)
            result = ConfigResult(name)
            for query in data.queries:
                started = time.perf_counter()
                hits = search(query, depth)
                seconds = time.perf_counter() - started
                ranking = [hit_key(hit, data.root, data.doc_ids) for hit in hits]
                scores = score_ranking(query, ranking, ks)
                first = {view: first_relevant_rank(
                    ranking if view == "fused" else [k for k in ranking if k.startswith(f"{view}:")],
                    query.relevant if view == "fused" else query.relevant_in(view)) for view in scores}
                result.queries.append(QueryResult(query.id, ranking, first, scores, seconds))
                bar.update(1)
            summarise(result, data.queries)
            results.append(result)
    finally:
        bar.close()
    return results


def summarise(result: ConfigResult, queries: Sequence[EvalQuery]) -> None:
    """Fill `means`, `counts` and `p50_ms` from the per-query results."""
    by_group: Dict[str, Dict[str, List[Dict[str, float]]]] = {}
    for query, scored in zip(queries, result.queries):
        for group in groups_of(query):
            for view, metrics in scored.scores.items():
                by_group.setdefault(group, {}).setdefault(view, []).append(metrics)
    result.means = {g: {v: mean_scores(rows) for v, rows in views.items()} for g, views in by_group.items()}
    result.counts = {g: {v: len(rows) for v, rows in views.items()} for g, views in by_group.items()}
    times = sorted(q.seconds for q in result.queries)
    result.p50_ms = 1000 * times[len(times) // 2] if times else 0.0


@contextmanager
def temporary_index(settings: Any, folder: Path, progress: bool = False,
                    embeddings: Optional[Dict[str, Any]] = None) -> Iterator[Any]:
    """A fresh index of `folder` in a temporary storage (deleted afterwards), as `rag ingest` builds it.

    `embeddings`: models already loaded (`text_embedding`, `image_embedding`; None ones load).
    """
    from rag.index.core import RagIndex
    from rag.index.ingest import ingest

    with tempfile.TemporaryDirectory(prefix="rag-eval-") as tmp:
        index = RagIndex(settings.with_overrides(storage=Path(tmp) / "storage"), **(embeddings or {}))
        try:
            report = ingest(index, [Path(folder)], progress=progress)
            if not report.text_nodes and not report.image_nodes:
                raise BadInputError(f"{folder}: nothing to index (no article or image was read)")
            yield index
        finally:
            index.close()


# -- Karpathy: CLIP-style retrieval over the whole split --------------------------------


def karpathy_recalls(similarity: Any, caption_image: Sequence[int], ks: Sequence[int] = (1, 5, 10)) -> Dict[str, Dict[str, float]]:
    """R@K both ways from a caption x image similarity matrix (numpy), as CLIP papers count.

    text -> image: the share of captions whose image is in their top K images.
    image -> text: the share of images with any of their captions in their top K captions.
    """
    import numpy as np

    sim = np.asarray(similarity, dtype=np.float64)
    owner = np.asarray(caption_image)
    n_captions, n_images = sim.shape
    # rank of the true image per caption: 1 + images scoring strictly higher
    true_scores = sim[np.arange(n_captions), owner]
    t2i_rank = 1 + (sim > true_scores[:, None]).sum(axis=1)
    i2t_rank = np.empty(n_images, dtype=np.int64)
    for image in range(n_images):
        column = sim[:, image]
        best_own = column[owner == image].max()
        i2t_rank[image] = 1 + int((column > best_own).sum())
    return {
        "text->image": {f"R@{k}": float((t2i_rank <= k).mean()) for k in ks},
        "image->text": {f"R@{k}": float((i2t_rank <= k).mean()) for k in ks},
    }


def _unit_rows(vectors: Any) -> Any:
    import numpy as np

    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


def evaluate_karpathy(data: KarpathySet, model: Any, batch_size: int = 64, progress: bool = False) -> Dict[str, Any]:
    """Embed every image and caption of the split with a CLIP model and score both directions.

    `model` needs `get_image_embedding_batch(paths)` and `get_text_embedding_batch(texts)`
    (the project's CLIP embedding has both); vectors are compared by cosine similarity.
    """
    from tqdm.auto import tqdm

    paths = [str(data.image_dir / name) for name in data.images]
    image_vectors: List[Any] = []
    text_vectors: List[Any] = []
    with tqdm(total=len(paths) + len(data.captions), desc="embed", unit="item", disable=not progress, leave=False) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            image_vectors += model.get_image_embedding_batch(chunk)
            bar.update(len(chunk))
        for start in range(0, len(data.captions), batch_size):
            chunk = data.captions[start:start + batch_size]
            text_vectors += model.get_text_embedding_batch(chunk)
            bar.update(len(chunk))
    similarity = _unit_rows(text_vectors) @ _unit_rows(image_vectors).T
    out: Dict[str, Any] = karpathy_recalls(similarity, data.caption_image)
    out["images"] = len(data.images)
    out["captions"] = len(data.captions)
    return out

