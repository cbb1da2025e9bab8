"""What every signal store holds for a node, whichever backend keeps it (pure apart from the tokenizer).

Both signal stores (qdrant-edge beside an embedded index, a collection beside each dense
collection on a Qdrant server) hold, per node, the same three things, built here once:

* ``bm25``: the BM25 sparse vector of the node's words, computed client-side by
  qdrant-edge's `Bm25` (English stemming and stop words; the engine applies IDF at query
  time, `Modifier.Idf`), so that both backends hold identical vectors;
* ``words`` (images only): those words embedded with the text model (given by the caller);
* the payload: the node's flat metadata, its node id and its document id, for filters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

SIGNALS_FORMAT = 1
NODE_ID_KEY = "node_id"
DOC_ID_KEY = "doc_id"
# Payload fields the signal queries filter on (keyword indexes where the backend has them).
INDEXED_KEYS = ("doc_id", "title", "url", "file_path", "modality")
# Expected document lengths in tokens for BM25's length normalisation.
AVG_LEN = {"text": 256.0, "image": 24.0}
BM25_LANGUAGE = "english"
BM25_PARAMS = {"language": BM25_LANGUAGE, "k": 1.2, "b": 0.75}  # qdrant-edge's defaults, recorded
KINDS = tuple(AVG_LEN)


@dataclass
class SignalPoint:
    """What a signal store holds for one node."""

    node_id: str
    doc_id: str
    metadata: Mapping[str, Any]
    text: str  # what BM25 reads
    words_vector: Optional[List[float]] = None  # images: the words, embedded


def check_kind(kind: str) -> str:
    """`kind` if it is "text" or "image"; ValueError otherwise."""
    if kind not in AVG_LEN:
        raise ValueError(f"kind must be 'text' or 'image', got {kind!r}")
    return kind


def flat_metadata(metadata: Mapping[str, Any]) -> Dict[str, Any]:
    """The scalar metadata fields (no private `_` keys): what signal filters can test."""
    return {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool)) and not k.startswith("_")}


def signal_payload(item: SignalPoint) -> Dict[str, Any]:
    """The payload of one node's signals: flat metadata plus node id and document id."""
    return {**flat_metadata(item.metadata), NODE_ID_KEY: item.node_id, DOC_ID_KEY: item.doc_id}


def words_vector_of(item: SignalPoint, kind: str) -> Optional[List[float]]:
    """An image's words vector (ValueError when missing); None for passages."""
    if kind != "image":
        return None
    if item.words_vector is None:
        raise ValueError(f"image node {item.node_id} has no words vector")
    return list(item.words_vector)


@functools.lru_cache(maxsize=None)
def bm25_encoder(avg_len: float) -> Any:
    """qdrant-edge's BM25 tokenizer and weighting for documents of this expected length."""
    import qdrant_edge as qe

    return qe.Bm25(qe.Bm25Config(language=BM25_LANGUAGE, avg_len=float(avg_len)))


def bm25_document(text: str, avg_len: float) -> Any:
    """The BM25 sparse vector of a stored text (qdrant-edge's `SparseVector`)."""
    return bm25_encoder(avg_len).embed_document(text or "")


def bm25_query(text: str, avg_len: float) -> Any:
    """The BM25 sparse vector of a query (term weights 1; IDF is the engine's)."""
    return bm25_encoder(avg_len).embed_query(text or "")


def sparse_terms(vector: Any) -> Tuple[List[int], List[float]]:
    """(indices, values) of a sparse vector, as plain lists (for qdrant-client)."""
    return [int(i) for i in vector.indices], [float(v) for v in vector.values]
