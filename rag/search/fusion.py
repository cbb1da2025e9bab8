"""Fusion arithmetic: several ranked lists of (id, score) into one ranking (pure).

This module is the reference for what the Qdrant engine computes when a query has several
`Prefetch` legs and a `Fusion` query, so that the engine's results can be checked against
it and backends without server-side fusion can fuse on the client:

* `rrf`: reciprocal rank fusion, as Qdrant computes it (0-based position p in a list,
  weight w): ``w / (p + 1 + w * (k - 1))``, i.e. ``1 / ((p + 1) / w + k - 1)``; with w = 1
  this is the textbook ``1 / (k + p)``. Scores are ignored, only positions count.
* `dbsf`: distribution-based score fusion, as Qdrant computes it: each list's scores are
  mapped by ``(s - (mean - 3 sd)) / (6 sd)`` (sample standard deviation; a list of one
  score, or of equal scores, maps to 0.5; no clamping) and the mapped scores are summed.

LlamaIndex's hybrid fusion for one collection (relative score fusion with `alpha`) lives with
the store that runs it, `rag.stores.edge_modes` (stores sit below this layer).

Each fused item remembers, for every list it appeared in, its 1-based rank and its raw
score: that is what `Hit.signals` shows. `with_minimums` then keeps at least N items of a
kind (for example one image) in the top of a fused list when the lists hold that many.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple

RRF_K = 60

Ranked = Sequence[Tuple[Hashable, float]]  # one signal's results, best first


@dataclass
class Fused:
    """One item of a fused ranking: its fused score and, per signal, its rank (1-based) and score."""

    id: Hashable
    score: float
    signals: Dict[str, Dict[str, float]] = field(default_factory=dict)

    def best_rank(self) -> int:
        """The best (smallest) rank the item had in any signal."""
        return int(min((s["rank"] for s in self.signals.values()), default=1 << 30))


def _weights(lists: Mapping[str, Ranked], weights: Optional[Mapping[str, float]]) -> Dict[str, float]:
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(lists))
    if unknown:
        raise ValueError(f"weights given for signals that have no list: {', '.join(unknown)}")
    out = {name: float(weights.get(name, 1.0)) for name in lists}
    bad = [name for name, w in out.items() if not w > 0]
    if bad:
        raise ValueError(f"signal weights must be positive: {', '.join(f'{n}={out[n]}' for n in bad)}")
    return out


def _collect(lists: Mapping[str, Ranked], contribution: Callable[[str, int, float], float]) -> List[Fused]:
    """Sum each list's contribution per id; ties break on best rank, then on id."""
    items: Dict[Hashable, Fused] = {}
    for name, ranked in lists.items():
        seen = set()
        for position, (item_id, score) in enumerate(ranked):
            if item_id in seen:  # a list names an id once; a repeat adds nothing
                continue
            seen.add(item_id)
            fused = items.setdefault(item_id, Fused(item_id, 0.0))
            fused.score += contribution(name, position, float(score))
            fused.signals[name] = {"rank": position + 1, "score": float(score)}
    return sorted(items.values(), key=lambda f: (-f.score, f.best_rank(), str(f.id)))


def rrf_score(position: int, k: int = RRF_K, weight: float = 1.0) -> float:
    """The RRF contribution of the item at 0-based `position` (Qdrant's formula)."""
    return 1.0 / ((position + 1) / weight + k - 1)


def rrf(lists: Mapping[str, Ranked], k: int = RRF_K, weights: Optional[Mapping[str, float]] = None,
        limit: Optional[int] = None) -> List[Fused]:
    """Reciprocal rank fusion of named ranked lists (best first), best fused item first."""
    if k < 1:
        raise ValueError(f"RRF k must be at least 1, got {k}")
    w = _weights(lists, weights)
    fused = _collect(lists, lambda name, position, _score: rrf_score(position, k, w[name]))
    return fused[:limit] if limit is not None else fused


def dbsf_normaliser(scores: Sequence[float]) -> Callable[[float], float]:
    """The map DBSF applies to one list's scores: mean - 3 sd -> 0, mean + 3 sd -> 1."""
    n = len(scores)
    if n == 0:
        return lambda s: 0.5
    mean = sum(scores) / n
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1)) if n > 1 else 0.0
    if sd == 0.0:
        return lambda s: 0.5
    low, span = mean - 3 * sd, 6 * sd
    return lambda s: (s - low) / span


def dbsf(lists: Mapping[str, Ranked], weights: Optional[Mapping[str, float]] = None,
         limit: Optional[int] = None) -> List[Fused]:
    """Distribution-based score fusion of named ranked lists, best fused item first.

    Weights multiply each list's normalised scores (the engine's DBSF has none: all 1).
    """
    w = _weights(lists, weights)
    norms = {name: dbsf_normaliser([float(s) for _, s in ranked]) for name, ranked in lists.items()}
    fused = _collect(lists, lambda name, _position, score: w[name] * norms[name](score))
    return fused[:limit] if limit is not None else fused


def with_minimums(ranked: Sequence[Fused], kind_of: Callable[[Fused], str], limit: int,
                  minimums: Optional[Mapping[str, int]] = None) -> List[Fused]:
    """The top `limit` items, holding at least `minimums[kind]` items of each kind when available.

    Items of a kind short of its minimum are promoted from further down, in their fused
    order, replacing the lowest-ranked items of kinds that have more than their own minimum.
    The result stays in fused order, so a promoted item sits where its score puts it.
    """
    if limit <= 0:
        return []
    minimums = {kind: n for kind, n in (minimums or {}).items() if n > 0}
    if sum(minimums.values()) > limit:
        wanted = ", ".join(f"{n} {kind}" for kind, n in minimums.items())
        raise ValueError(f"the minimums ({wanted}) add up to more than the {limit} results asked for")
    chosen = list(ranked[:limit])
    rest = list(ranked[limit:])
    for kind, need in minimums.items():
        have = sum(1 for item in chosen if kind_of(item) == kind)
        extra = [item for item in rest if kind_of(item) == kind][: max(0, need - have)]
        for item in extra:
            counts: Dict[str, int] = {}
            for other in chosen:
                counts[kind_of(other)] = counts.get(kind_of(other), 0) + 1
            # the lowest-ranked item whose kind can spare one
            for pos in range(len(chosen) - 1, -1, -1):
                other_kind = kind_of(chosen[pos])
                if other_kind != kind and counts[other_kind] > minimums.get(other_kind, 0):
                    chosen.pop(pos)
                    break
            else:
                break  # nothing can give way (cannot happen when the minimums fit in `limit`)
            chosen.append(item)
            rest.remove(item)
    order = {id(item): pos for pos, item in enumerate(ranked)}
    return sorted(chosen, key=lambda item: order[id(item)])


def fuse(lists: Mapping[str, Ranked], method: str = "rrf", k: int = RRF_K,
         weights: Optional[Mapping[str, float]] = None, limit: Optional[int] = None) -> List[Fused]:
    """`rrf` or `dbsf` by name (the names `rag search --fusion` accepts)."""
    if method == "rrf":
        return rrf(lists, k=k, weights=weights, limit=limit)
    if method == "dbsf":
        return dbsf(lists, weights=weights, limit=limit)
    raise ValueError(f"unknown fusion method {method!r}: expected 'rrf' or 'dbsf'")


def ids(fused: Iterable[Fused]) -> List[Hashable]:
    """The ids of a fused ranking, in order."""
    return [f.id for f in fused]
