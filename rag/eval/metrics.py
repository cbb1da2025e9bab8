"""Ranking metrics (pure): Recall@K, success@K, MRR@K and nDCG@K, and their means over queries.

A ranking is a list of ids, best first; `relevant` maps each relevant id to its grade
(1 for binary labels). Repeated ids in a ranking count once, at their first position (a
passage-level ranking mapped to articles repeats an article for each of its passages).
"""

from __future__ import annotations

import math
from typing import Dict, Hashable, Iterable, List, Mapping, Sequence

Ranking = Sequence[Hashable]
Relevant = Mapping[Hashable, float]


def dedupe(ranking: Iterable[Hashable]) -> List[Hashable]:
    """The ranking with repeats removed, first occurrence kept."""
    seen = set()
    out = []
    for item in ranking:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _relevant(relevant: Relevant) -> Dict[Hashable, float]:
    return {k: float(v) for k, v in relevant.items() if float(v) > 0}


def recall_at(ranking: Ranking, relevant: Relevant, k: int) -> float:
    """The share of the relevant ids found in the top k (0 when nothing is relevant)."""
    rel = _relevant(relevant)
    if not rel:
        return 0.0
    return sum(1 for item in dedupe(ranking)[:k] if item in rel) / len(rel)


def success_at(ranking: Ranking, relevant: Relevant, k: int) -> float:
    """1 when any relevant id is in the top k, else 0: the R@K of image-text retrieval papers."""
    rel = _relevant(relevant)
    return 1.0 if any(item in rel for item in dedupe(ranking)[:k]) else 0.0


def first_relevant_rank(ranking: Ranking, relevant: Relevant) -> int:
    """The 1-based rank of the first relevant id, 0 when none is ranked."""
    rel = _relevant(relevant)
    for rank, item in enumerate(dedupe(ranking), start=1):
        if item in rel:
            return rank
    return 0


def mrr_at(ranking: Ranking, relevant: Relevant, k: int = 10) -> float:
    """Reciprocal rank of the first relevant id within the top k (0 beyond k)."""
    rank = first_relevant_rank(ranking, relevant)
    return 1.0 / rank if 0 < rank <= k else 0.0


def ndcg_at(ranking: Ranking, relevant: Relevant, k: int = 10) -> float:
    """Normalised discounted cumulative gain at k, gains = grades, discount log2(rank + 1)."""
    rel = _relevant(relevant)
    if not rel:
        return 0.0
    dcg = sum(rel.get(item, 0.0) / math.log2(rank + 1) for rank, item in enumerate(dedupe(ranking)[:k], start=1))
    ideal = sorted(rel.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg


def score_query(ranking: Ranking, relevant: Relevant, ks: Sequence[int] = (1, 3, 5, 10)) -> Dict[str, float]:
    """All metrics for one query: R@k and S@k (success) for each k, MRR@10, nDCG@10."""
    out: Dict[str, float] = {}
    for k in ks:
        out[f"R@{k}"] = recall_at(ranking, relevant, k)
        out[f"S@{k}"] = success_at(ranking, relevant, k)
    out["MRR@10"] = mrr_at(ranking, relevant, 10)
    out["nDCG@10"] = ndcg_at(ranking, relevant, 10)
    return out


def mean_scores(per_query: Sequence[Mapping[str, float]]) -> Dict[str, float]:
    """The mean of each metric over the queries (an empty dict for no query)."""
    if not per_query:
        return {}
    names = list(per_query[0])
    return {name: sum(q[name] for q in per_query) / len(per_query) for name in names}
