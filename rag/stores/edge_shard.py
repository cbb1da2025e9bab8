"""What goes into and comes out of a qdrant-edge shard, as pure functions.

Shard configuration (vectors, HNSW, quantization), payload indexes, nodes -> points,
records -> nodes, and query requests are built here, apart from the store's locking and
lifecycle, so that another vector (a named or sparse one) or another query shape (prefetch
and fusion) is added in one place: `shard_config` declares the vectors, `search_request`
builds a request from any `qe.Query`.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence

import qdrant_edge as qe
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node

from rag.stores.payload import node_payload, point_id_for

ORIGINAL_ID_KEY = "_node_id"  # written only when the node id is not a UUID
SCROLL_PAGE = 1024

DEFAULT_PAYLOAD_INDEXES: Dict[str, str] = {
    "doc_id": "keyword",
    "ref_doc_id": "keyword",
    "file_path": "keyword",
    "title": "keyword",
    "modality": "keyword",
}

SCHEMA_TYPES = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
    "text": qe.PayloadSchemaType.Text,
    "datetime": qe.PayloadSchemaType.Datetime,
    "uuid": qe.PayloadSchemaType.Uuid,
    "geo": qe.PayloadSchemaType.Geo,
}


def checked_options(quantization: Optional[str], payload_indexes: Optional[Dict[str, str]]) -> Dict[str, str]:
    """Validate the store's quantization and payload index types; the indexes to create."""
    if quantization not in (None, "int8"):
        raise ValueError(f"quantization={quantization!r} is not supported; expected None or 'int8'")
    indexes = dict(DEFAULT_PAYLOAD_INDEXES if payload_indexes is None else payload_indexes)
    for name, kind in indexes.items():
        if kind not in SCHEMA_TYPES:
            raise ValueError(
                f"payload_indexes[{name!r}] = {kind!r} is not an index type; "
                f"expected one of {', '.join(SCHEMA_TYPES)}"
            )
    return indexes


def dense_vector(dim: int) -> qe.EdgeVectorParams:
    """The unnamed dense vector every point has: ``dim`` floats, cosine distance."""
    return qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)


def shard_config(
    dim: int,
    *,
    hnsw_m: int,
    hnsw_ef_construct: int,
    full_scan_threshold_kb: int,
    quantization: Optional[str],
    max_search_threads: Optional[int],
) -> qe.EdgeConfig:
    """The engine configuration of a new (or reopened) shard."""
    quant = None
    if quantization == "int8":
        quant = qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99)
    return qe.EdgeConfig(
        vectors=dense_vector(dim),
        hnsw_config=qe.HnswIndexConfig(
            m=hnsw_m, ef_construct=hnsw_ef_construct, full_scan_threshold=full_scan_threshold_kb
        ),
        quantization_config=quant,
        # The engine only optimizes when asked; when it is asked (an add past the store's
        # index_threshold, or optimize()), every unindexed segment should get its graph.
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
        max_search_threads=max_search_threads,
    )


def ensure_payload_indexes(shard: Any, indexes: Dict[str, str]) -> None:
    """Create the payload indexes the shard does not have yet."""
    existing = shard.info().payload_schema
    for name, kind in indexes.items():
        if name not in existing:
            shard.update(qe.UpdateOperation.create_field_index(name, SCHEMA_TYPES[kind]))


def _embedding_of(node: BaseNode) -> List[float]:
    embedding = node.embedding
    if embedding is None:
        raise ValueError(
            f"Node {node.node_id!r} has no embedding; embed nodes before adding "
            "them to the vector store (or add them through an index)."
        )
    if not isinstance(embedding, list):
        embedding = list(embedding.tolist() if hasattr(embedding, "tolist") else embedding)
    return embedding


def build_points(nodes: Sequence[BaseNode], flat_metadata: bool = False) -> List[qe.Point]:
    """Nodes as engine points (pure). Payloads match the stock QdrantVectorStore's."""
    points = []
    for node in nodes:
        embedding = _embedding_of(node)
        payload = node_payload(node, flat_metadata=flat_metadata)
        pid = point_id_for(node.node_id)
        if pid != node.node_id:
            payload[ORIGINAL_ID_KEY] = node.node_id
        points.append(qe.Point(pid, embedding, payload))
    return points


def node_from_record(payload: dict, vector: Any = None) -> BaseNode:
    """A LlamaIndex node from a stored payload (and its vector, when it was read)."""
    node = metadata_dict_to_node(payload)
    if vector is not None and node.embedding is None:
        node.embedding = list(vector) if not isinstance(vector, dict) else vector.get("")
    return node


def search_params(
    *, exact: bool, hnsw_ef: Optional[int], quantization: Optional[str], oversampling: float
) -> qe.SearchParams:
    """How to search: exact or HNSW (beam ``hnsw_ef``); quantized candidates rescored."""
    quant = None
    if quantization is not None:
        quant = (
            qe.QuantizationSearchParams(ignore=True)
            if exact
            else qe.QuantizationSearchParams(rescore=True, oversampling=oversampling)
        )
    return qe.SearchParams(hnsw_ef=hnsw_ef, exact=exact, quantization=quant)


def search_request(
    query: Any,
    *,
    limit: int,
    flt: Optional[qe.Filter],
    params: qe.SearchParams,
    score_threshold: Optional[float] = None,
    with_payload: bool = True,
    **extra: Any,
) -> qe.QueryRequest:
    """A query request for any ``qe.Query`` (payloads returned unless `with_payload` is False; vectors not).

    ``extra`` passes on other request fields (``prefetches=...`` for fusion queries).
    """
    return qe.QueryRequest(limit=limit, query=query, filter=flt, with_payload=with_payload, with_vector=False,
                           params=params, score_threshold=score_threshold, **extra)


def scroll_records(shard: Any, flt: Optional[qe.Filter], limit: Optional[int], with_vector: bool = True,
                   with_payload: bool = True) -> Iterator[Any]:
    """Records (payload and vector unless told not to) matching ``flt``, in point-id order, page by page."""
    offset = None
    left = limit
    while left is None or left > 0:
        page = SCROLL_PAGE if left is None else min(SCROLL_PAGE, left)
        records, offset = shard.scroll(
            qe.ScrollRequest(offset=offset, limit=page, filter=flt, with_payload=with_payload, with_vector=with_vector)
        )
        yield from records
        if left is not None:
            left -= len(records)
        if offset is None or not records:
            return
