"""Image -> passages, measured (`rag eval CORPUS --pictures`).

Every picture of an indexed corpus becomes a query: a lightly altered copy of it (cropped and
shrunk, saved as JPEG, so never the stored file), labelled with the passages of its own article
(the article key of its metadata: url, else title) and with the picture itself. Two ways of
answering such a query with passages are compared:

- ``article link``: the search we ship. The query picture finds pictures by CLIP, and the
  passages of their articles rank by those pictures' ranks (`rag.search.hybrid`).
- ``clip text``: CLIP's text tower on every passage (cut at 77 tokens) and the query picture
  against those vectors, the other option the issue named; it is computed here, for the
  measurement only, not stored in the index. It returns passages only, so its picture columns
  are zero by construction: compare the passage (`text`) columns.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Sequence

from PIL import Image

from rag.corpus.words import article_key
from rag.eval.datasets import EvalQuery
from rag.eval.runner import SearchFn, label_for

logger = logging.getLogger(__name__)

PICTURE_CONFIGS = ("article link", "clip text")
CROP = 0.1  # cut from each side
SHRINK = 0.75


def altered_copy(source: Path, dest: Path) -> Path:
    """`source` cropped by a tenth on each side, shrunk to three quarters, saved as JPEG at `dest`."""
    with Image.open(source) as image:
        image = image.convert("RGB")
        width, height = image.size
        box = (round(width * CROP), round(height * CROP), round(width * (1 - CROP)), round(height * (1 - CROP)))
        image = image.crop(box)
        size = (max(1, round(image.width * SHRINK)), max(1, round(image.height * SHRINK)))
        image.resize(size, Image.Resampling.BICUBIC).save(dest, "JPEG", quality=85)
    return dest


def _all_nodes(store: Any) -> List[Any]:
    return [node for page in store.iter_nodes() for node in page]


def picture_queries(index: Any, root: Path, workdir: Path) -> List[EvalQuery]:
    """One query per picture of the index whose article has passages there (altered copies in `workdir`)."""
    root, workdir = Path(root), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    passages: Dict[str, List[str]] = {}
    for node in _all_nodes(index.stores.text):
        key = article_key(node.metadata)
        if key and node.metadata.get("file_path"):
            passages.setdefault(key, []).append(label_for("text", node.metadata["file_path"], root))
    queries = []
    for node in sorted(_all_nodes(index.stores.image), key=lambda n: str(n.metadata.get("file_path"))):
        file, key = node.metadata.get("file_path"), article_key(node.metadata)
        if not file or not key or key not in passages or not Path(file).is_file():
            continue
        own = label_for("image", file, root)
        try:
            copy = altered_copy(Path(file), workdir / f"{len(queries):03d}-{Path(file).stem}.jpg")
        except OSError as exc:  # changed or damaged since it was indexed: no query from it
            logger.warning("%s: skipped as a query picture (%s)", file, exc)
            continue
        relevant = {label: 1.0 for label in passages[key]}
        relevant[own] = 1.0
        queries.append(EvalQuery(id=f"picture:{own[len('image:'):]}", image=str(copy), relevant=relevant))
    return queries


def article_link_search(retriever: Any) -> SearchFn:
    """Passages (and pictures) for a query picture as `rag search --image` finds them."""

    def search(query: EvalQuery, depth: int) -> Sequence[Any]:
        return retriever.search("", image=query.image, top_k=depth, image_top_k=depth)

    return search


def rank_by_cosine(query: Sequence[float], vectors: Sequence[Sequence[float]]) -> List[int]:
    """Row numbers of `vectors`, most cosine-similar to `query` first (ties: lower row first)."""
    import numpy as np

    matrix = np.asarray(vectors, dtype=np.float64)
    if not len(matrix):
        return []
    norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(query) or 1.0)
    scores = matrix @ np.asarray(query, dtype=np.float64) / np.where(norms == 0, 1.0, norms)
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def clip_text_search(index: Any) -> SearchFn:
    """Passages ranked by CLIP: the query picture against CLIP text vectors of every passage."""
    from rag.search.nodes import node_to_hit

    nodes = _all_nodes(index.stores.text)
    clip = index.image_embedding
    vectors = clip.get_text_embedding_batch([node.get_content() for node in nodes]) if nodes else []

    def search(query: EvalQuery, depth: int) -> Sequence[Any]:
        order = rank_by_cosine(clip.get_image_embedding(query.image), vectors)[:depth]
        return [node_to_hit(nodes[i], 0.0) for i in order]

    return search
