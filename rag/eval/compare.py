"""The configurations `rag eval --compare` runs, and the table and checks it prints."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Mapping, Sequence

from rag.eval.datasets import EvalQuery
from rag.eval.runner import ConfigResult, SearchFn
from rag.search.signals import FusionSettings

DEFAULT = "fused"


def configurations() -> Dict[str, FusionSettings]:
    """Name -> fusion settings, from the dense baseline to every signal."""
    full = FusionSettings()
    return {
        "dense": full.using("dense", "clip"),
        "hybrid": full.using("dense", "bm25", "clip", "words_bm25"),
        "fused": full,
        "fused+mmr": replace(full, mmr=0.5),
        "no-captions": full.without("words", "words_bm25"),
        "captions": full.using("dense", "bm25", "words", "words_bm25"),
    }


def describe(name: str) -> str:
    """One line on what a configuration uses."""
    return {
        "dense": "dense vectors only: the text model for passages, CLIP for images",
        "hybrid": "dense plus BM25 over passages and over images' words",
        "fused": "every signal: dense, BM25, CLIP, images' words (dense and BM25), article link",
        "fused+mmr": "fused, passages diversified by the engine's MMR (lambda 0.5)",
        "no-captions": "fused without the images' words (CLIP and the article link only)",
        "captions": "images by their words alone (dense and BM25): no CLIP, no article link",
        "article link": "passages of the articles of the pictures CLIP finds (what `rag search --image` does)",
        "clip text": "passages by CLIP: the picture against CLIP text vectors of the passages",
    }.get(name, name)


def search_fn(retriever: Any, settings: FusionSettings) -> SearchFn:
    """A runner search function: the retriever's fused list, `depth` deep per modality."""

    def search(query: EvalQuery, depth: int) -> Sequence[Any]:
        return retriever.search(query.text, image=query.image, top_k=depth, image_top_k=depth, fusion=settings)

    return search


def checks(result: ConfigResult, queries: Sequence[EvalQuery]) -> Dict[str, List[int]]:
    """The issue's targets: passage first for the basic questions; an image in the top 3."""
    first = [0, 0]
    top3 = [0, 0]
    for query, scored in zip(queries, result.queries):
        if query.set in ("basic", "") and query.relevant_in("text"):
            first[1] += 1
            first[0] += bool(scored.ranking) and scored.ranking[0] in query.relevant_in("text")
        if query.relevant_in("image"):
            top3[1] += 1
            top3[0] += any(key in query.relevant_in("image") for key in scored.ranking[:3])
    return {"passage_first": first, "image_in_top3": top3}


COLUMNS = {"fused": ("R@1", "R@5", "MRR@10", "nDCG@10"), "text": ("R@1", "MRR@10"), "image": ("R@1", "R@3", "MRR@10")}


def table(results: Sequence[ConfigResult], groups: Sequence[str]) -> List[str]:
    """Lines of a plain-text table: one row per configuration and group of queries."""
    views = [v for v in COLUMNS if any(v in r.means.get(g, {}) for r in results for g in groups)]
    head = f"{'config':<12} {'queries':<22} " + " | ".join(
        f"{v}: " + " ".join(f"{m:>7}" for m in COLUMNS[v]) for v in views) + " |  p50 ms"
    lines = [head, "-" * len(head)]
    for r in results:
        for g in groups:
            if g not in r.means:
                continue
            n = r.counts[g].get("fused", 0)
            cells = []
            for v in views:
                means = r.means[g].get(v)
                values = " ".join(f"{means[m]:>7.3f}" if means else f"{'-':>7}" for m in COLUMNS[v])
                cells.append(f"{' ' * (len(v) + 2)}{values}")
            lines.append(f"{r.name:<12} {f'{g} ({n})':<22} " + " | ".join(cells) + f" | {r.p50_ms:7.1f}")
    return lines


def groups_in(queries: Sequence[EvalQuery]) -> List[str]:
    """The groups worth a row: all, each set, each kind of a set with kinds."""
    seen: Dict[str, None] = {"all": None}
    for q in queries:
        if q.set:
            seen[q.set] = None
    kinds: Dict[str, Dict[str, None]] = {}
    for q in queries:
        if q.set and q.kind:
            kinds.setdefault(q.set, {})[q.kind] = None
    for name, of_set in kinds.items():
        if len(of_set) > 1:  # one kind only: its row would repeat the set's
            seen.update({f"{name}/{kind}": None for kind in of_set})
    return list(seen)


def to_json(results: Sequence[ConfigResult], queries: Sequence[EvalQuery], settings: Mapping[str, FusionSettings]) -> Dict[str, Any]:
    """Everything `rag eval --json` prints."""
    out: Dict[str, Any] = {}
    for r in results:
        s = settings.get(r.name)
        out[r.name] = {
            "signals": list(s.signals) if s else None,
            "fusion": s.method if s else None,
            "means": r.means,
            "counts": r.counts,
            "p50_ms": r.p50_ms,
            "checks": checks(r, queries),
            "queries": [{"id": q.id, "first_relevant_rank": q.first_rank, "top": q.ranking[:10]} for q in r.queries],
        }
    return out


def unknown(names: Sequence[str]) -> List[str]:
    return [n for n in names if n not in configurations()]


