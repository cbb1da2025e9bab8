"""Which signals rank what, and how they are fused into one list across passages and images (pure).

Signals (the names a hit's `signals` uses):

* passages: ``dense`` (the text model) and ``bm25`` (lexical, the engine's IDF);
* images: ``clip`` (the query text against the picture, CLIP's text tower), ``clip_image``
  (a query picture against the picture), ``words`` (the image's own
  words - title, caption, alt text, description, file name - embedded with the text model),
  ``words_bm25`` (the same words, lexical) and ``article`` (the image's article has passages
  that match: images ranked by the rank of their article's best passage).

Each modality's signals are fused into one ranking of that modality, then the two rankings
into one list. The defaults were chosen by `rag eval --compare` on the sample questions
(docs/quality.md): weighted distribution-based score fusion, because reciprocal rank fusion
let BM25 reorder paraphrases that share no word with their article, and because Qdrant's
RRF weights barely act at k = 60.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

from rag.corpus.words import article_key, image_words  # noqa: F401  (re-exported)
from rag.search.fusion import Fused, Ranked, dbsf, rrf, with_minimums

TEXT_SIGNALS = ("dense", "bm25")
IMAGE_SIGNALS = ("clip", "clip_image", "words", "words_bm25", "article")
SIGNALS = TEXT_SIGNALS + IMAGE_SIGNALS


@dataclass(frozen=True)
class FusionSettings:
    """How signals are weighted and fused; `rag eval --compare` varies these."""

    method: str = "dbsf"  # "dbsf" (weighted, client-side) or "rrf"
    k: int = 2  # RRF's k (Qdrant's default is 2; at 60 its weights barely act)
    weights: Mapping[str, float] = field(default_factory=lambda: {
        "dense": 1.0, "bm25": 0.5, "clip": 0.5, "clip_image": 1.0, "words": 1.0, "words_bm25": 0.5,
        "article": 1.0})
    image_weight: float = 0.8  # the image ranking against the passage ranking
    signals: Tuple[str, ...] = SIGNALS  # the signals in use
    mmr: Optional[float] = None  # MMR lambda for the passages' dense signal (None: off)

    @classmethod
    def from_options(cls, signals: Optional[Sequence[str]] = None, method: Optional[str] = None,
                     mmr: Optional[float] = None) -> Optional["FusionSettings"]:
        """Settings from a request's options; None when none is given (the retriever's own)."""
        if signals is None and method is None and mmr is None:
            return None
        settings = cls().using(*signals) if signals is not None else cls()
        if method is not None:
            if method not in ("dbsf", "rrf"):
                raise ValueError(f"unknown fusion method {method!r}: expected 'dbsf' or 'rrf'")
            settings = replace(settings, method=method)
        if mmr is not None:
            if not 0 <= mmr <= 1:
                raise ValueError(f"the MMR lambda must be between 0 and 1, got {mmr}")
            settings = replace(settings, mmr=mmr)
        return settings

    def using(self, *names: str) -> "FusionSettings":
        """A copy with only the named signals."""
        unknown = [n for n in names if n not in SIGNALS]
        if unknown:
            raise ValueError(f"unknown signals {', '.join(unknown)}: expected some of {', '.join(SIGNALS)}")
        return replace(self, signals=tuple(n for n in SIGNALS if n in names))

    def without(self, *names: str) -> "FusionSettings":
        """A copy without the named signals."""
        return self.using(*[n for n in self.signals if n not in names])


def article_ranking(text_ranked: Sequence[Tuple[Hashable, float]], text_article: Mapping[Hashable, Optional[str]],
                    image_article: Mapping[Hashable, Optional[str]]) -> List[Tuple[Hashable, float]]:
    """Images ranked by their article's best passage in `text_ranked`, with that passage's score."""
    best: Dict[str, Tuple[int, float]] = {}
    for position, (text_id, score) in enumerate(text_ranked):
        key = text_article.get(text_id)
        if key and key not in best:
            best[key] = (position, score)
    linked = [(image_id, best[key]) for image_id, key in image_article.items() if key in best]
    linked.sort(key=lambda item: (item[1][0], str(item[0])))
    return [(image_id, score) for image_id, (_, score) in linked]


def _fuse(lists: Mapping[str, Ranked], settings: FusionSettings) -> List[Fused]:
    lists = {name: ranked for name, ranked in lists.items() if ranked}
    weights = {name: settings.weights.get(name, 1.0) for name in lists}
    if settings.method == "rrf":
        return rrf(lists, k=settings.k, weights=weights)
    if settings.method == "dbsf":
        return dbsf(lists, weights=weights)
    raise ValueError(f"unknown fusion method {settings.method!r}: expected 'dbsf' or 'rrf'")


def fuse_modality(legs: Mapping[str, Ranked], settings: FusionSettings) -> List[Fused]:
    """One modality's signals (those in use) fused into its ranking."""
    return _fuse({name: legs[name] for name in settings.signals if name in legs}, settings)


@dataclass
class Ranking:
    """The fused list: (modality, id) items best first, with each item's signals."""

    items: List[Fused]

    def of(self, modality: str) -> List[Fused]:
        return [item for item in self.items if item.id[0] == modality]


def fuse_all(text: Sequence[Fused], images: Sequence[Fused], settings: FusionSettings, limit: int,
             min_images: int = 0, min_text: int = 0, picture_query: bool = False) -> Ranking:
    """Passages and images in one list: their two rankings fused, then the per-kind minimums.

    Items are keyed `("text", id)` / `("image", id)`; each keeps the signals of its modality.
    `image_weight` weighs the images against the passages of a worded query; for a query
    that is only a picture, it weighs the passages against the images instead.
    """
    text_list = [(("text", f.id), f.score) for f in text]
    image_list = [(("image", f.id), f.score) for f in images]
    lists = {name: ranked for name, ranked in (("text", text_list), ("image", image_list)) if ranked}
    other = "text" if picture_query else "image"
    weights = {other: settings.image_weight} if other in lists else {}
    if settings.method == "rrf":
        merged = rrf(lists, k=settings.k, weights=weights)
    else:
        merged = dbsf(lists, weights=weights)
    signals = {("text", f.id): f.signals for f in text}
    signals.update({("image", f.id): f.signals for f in images})
    for item in merged:
        item.signals = signals[item.id]
    minimums = {"image": min_images, "text": min_text}
    top = with_minimums(merged, lambda f: f.id[0], limit, minimums) if limit < len(merged) else merged[:limit]
    return Ranking(list(top))
