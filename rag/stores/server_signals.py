"""The lexical and caption signals of one collection on a Qdrant server, in a collection beside it.

The server counterpart of `rag.stores.signals.SignalStore` (same methods, same results):
``<collection>_signals`` holds, per node of ``<collection>``, the ``bm25`` sparse vector
(`Modifier.IDF`: the server applies IDF at query time) and, for images, the ``words``
vector, with the node's flat metadata, node id and document id as payload. The vectors and
payloads are built by `rag.stores.signal_points`, the code the embedded store uses, so both
backends hold identical vectors; queries go through qdrant-client's Query API
(`query_batch_points`, one request per leg, `using` the leg's vector).

The collection's metadata records the format, the kind and the BM25 settings (a server too
old to keep collection metadata is judged by the collection's vectors instead). The store
uses the index's qdrant-client (its timeout and address rules: `rag.stores.factory`).
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

from qdrant_client import models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from rag.errors import StorageError
from rag.stores.payload import point_id_for
from rag.stores.server_filters import all_of, server_filter
from rag.stores.signal_points import (
    AVG_LEN,
    BM25_PARAMS,
    DOC_ID_KEY,
    INDEXED_KEYS,
    NODE_ID_KEY,
    SIGNALS_FORMAT,
    SignalPoint,
    bm25_document,
    bm25_query,
    check_kind,
    signal_payload,
    sparse_terms,
    words_vector_of,
)

SUFFIX = "_signals"
BATCH = 256
_SERVER_ERRORS = (UnexpectedResponse, ResponseHandlingException)


def signal_collection(collection: str) -> str:
    """The name of the signal collection beside a dense collection."""
    return f"{collection}{SUFFIX}"


class ServerSignalStore:
    """BM25 (and, for images, caption-word vectors) for the points of one server collection."""

    def __init__(self, client: Any, collection: str, kind: str, shard_number: Optional[int] = None,
                 replication_factor: Optional[int] = None) -> None:
        self.client = client
        self.kind = check_kind(kind)
        self.collection_name = collection
        self._create_options = {"shard_number": shard_number, "replication_factor": replication_factor}
        self._lock = threading.RLock()
        self._closed = False
        self._exists = False
        self._words_dim: Optional[int] = None
        self.avg_len = AVG_LEN[kind]
        # a collection of another format or kind opens anyway (so that `rag migrate --signals`
        # can rebuild it); every use but `drop` then raises this message
        self._broken: Optional[str] = None
        self._read_meta()

    # -- lifecycle -------------------------------------------------------------------
    def _call(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except _SERVER_ERRORS as exc:
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise StorageError(f"the Qdrant server could not {what} the signal collection "
                               f"{self.collection_name!r} ({type(exc).__name__}: {reason})") from None

    def _read_meta(self) -> None:
        if not self._call("find", lambda: self.client.collection_exists(self.collection_name)):
            return
        info = self._call("read", lambda: self.client.get_collection(self.collection_name))
        meta = info.config.metadata or {}
        vectors = info.config.params.vectors
        words = vectors.get("words") if isinstance(vectors, dict) else None
        sparse = info.config.params.sparse_vectors or {}
        if meta:
            right = meta.get("format") == SIGNALS_FORMAT and meta.get("kind") == self.kind
        else:  # a server without collection metadata (before Qdrant 1.16): judge by the vectors
            right = "bm25" in sparse and (words is not None) == (self.kind == "image")
        self._exists = True
        if not right:
            self._broken = (f"the collection {self.collection_name!r} on the Qdrant server is not "
                            f"{'an' if self.kind == 'image' else 'a'} {self.kind} signal store of format "
                            f"{SIGNALS_FORMAT}; rebuild it with: rag migrate --signals")
            return
        self.avg_len = float(meta.get("avg_len", AVG_LEN[self.kind]))
        self._words_dim = words.size if words is not None else None

    def exists(self) -> bool:
        """Has this store been built (possibly empty)?"""
        return self._exists

    def _check(self) -> None:
        if self._broken:
            raise StorageError(self._broken)

    def _create(self, words_dim: Optional[int]) -> None:
        vectors: Dict[str, models.VectorParams] = {}
        if self.kind == "image":
            if not words_dim:
                raise ValueError("an image signal store needs the text model's dimension")
            vectors["words"] = models.VectorParams(size=words_dim, distance=models.Distance.COSINE)
        meta = {"format": SIGNALS_FORMAT, "kind": self.kind, "avg_len": self.avg_len, "bm25": dict(BM25_PARAMS)}
        name = self.collection_name
        self._call("create", lambda: self.client.create_collection(
            name, vectors_config=vectors,
            sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
            metadata=meta, **self._create_options))
        for key in INDEXED_KEYS:
            self._call("index", lambda: self.client.create_payload_index(
                name, key, field_schema=models.PayloadSchemaType.KEYWORD))
        self._words_dim = words_dim
        self._exists = True

    def ensure(self, words_dim: Optional[int] = None) -> None:
        """Create the (empty) collection now if it does not exist yet."""
        self._check()
        with self._lock:
            if not self._exists:
                self._create(words_dim)

    def close(self) -> None:
        """Refuse further writes (the client belongs to the index's stores, which close it)."""
        self._closed = True

    def drop(self) -> None:
        """Delete the signal collection: afterwards the store is not built (`exists()` is False)."""
        with self._lock:
            if self._call("find", lambda: self.client.collection_exists(self.collection_name)):
                self._call("delete", lambda: self.client.delete_collection(self.collection_name))
            self._exists = False
            self._broken = None
            self._words_dim = None
            self._closed = False
            self.avg_len = AVG_LEN[self.kind]

    def optimize(self) -> bool:
        """Nothing to do: a server indexes in the background."""
        return False

    # -- writes ----------------------------------------------------------------------
    def build_points(self, items: Sequence[SignalPoint]) -> List[models.PointStruct]:
        """qdrant-client points for the items (pure apart from the BM25 tokenizer)."""
        points = []
        for item in items:
            indices, values = sparse_terms(bm25_document(item.text, self.avg_len))
            vector: Dict[str, Any] = {"bm25": models.SparseVector(indices=indices, values=values)}
            words = words_vector_of(item, self.kind)
            if words is not None:
                vector["words"] = words
            points.append(models.PointStruct(id=point_id_for(item.node_id), vector=vector,
                                             payload=signal_payload(item)))
        return points

    def add(self, items: Sequence[SignalPoint]) -> None:
        """Upsert the signals of these nodes."""
        self._check()
        if not items:
            return
        points = self.build_points(items)
        dims = {len(i.words_vector) for i in items if i.words_vector is not None}
        with self._lock:
            if self._closed:
                raise StorageError(f"the signal store {self.collection_name!r} is closed")
            if not self._exists:
                self._create(dims.pop() if dims else None)
            elif dims and dims != {self._words_dim}:
                raise ValueError(f"words vectors of size {sorted(dims)}, but {self.collection_name!r} "
                                 f"holds {self._words_dim}")
            for start in range(0, len(points), BATCH):
                batch = points[start:start + BATCH]
                self._call("write to", lambda: self.client.upsert(self.collection_name, batch, wait=True))

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Drop the signals of every node of these documents."""
        self._check()
        if not self._exists or not doc_ids:
            return
        flt = models.Filter(must=[models.FieldCondition(key=DOC_ID_KEY, match=models.MatchAny(any=list(doc_ids)))])
        self._call("delete from", lambda: self.client.delete(
            self.collection_name, points_selector=models.FilterSelector(filter=flt), wait=True))

    def count(self) -> int:
        """Exact number of points (0 before the store is built)."""
        self._check()
        if not self._exists:
            return 0
        return int(self._call("count", lambda: self.client.count(self.collection_name, exact=True).count))

    # -- reads -----------------------------------------------------------------------
    def query(self, text: str = "", words_vector: Optional[List[float]] = None, limit: int = 20,
              filters: Optional[Any] = None, point_ids: bool = False) -> Dict[str, List[Tuple[str, float]]]:
        """The ``bm25`` (when `text` has a word BM25 keeps) and ``words`` legs: node ids, best first.

        `filters`: LlamaIndex `MetadataFilters` on the nodes' flat metadata. `point_ids`: the
        points' ids (`point_id_for` of the node ids) instead, and no payload is read (faster).
        """
        self._check()
        flt = server_filter(filters)
        legs: Dict[str, Any] = {}
        if text:
            indices, values = sparse_terms(bm25_query(text, self.avg_len))
            if indices:
                legs["bm25"] = models.SparseVector(indices=indices, values=values)
        if words_vector is not None and self.kind == "image":
            legs["words"] = [float(x) for x in words_vector]
        if not self._exists or not legs or limit <= 0:
            return {}
        requests = [models.QueryRequest(query=q, using=name, filter=flt, limit=limit,
                                        with_payload=False if point_ids else [NODE_ID_KEY])
                    for name, q in legs.items()]
        results = self._call("search", lambda: self.client.query_batch_points(self.collection_name, requests))
        return {name: [(str(p.id) if point_ids else p.payload[NODE_ID_KEY], float(p.score)) for p in result.points]
                for name, result in zip(legs, results)}

    def article_keys(self, node_ids: Sequence[str]) -> Dict[str, Optional[str]]:
        """node id -> article key (url, else title) for these nodes, from the payload alone."""
        self._check()
        if not node_ids or not self._exists:
            return {}
        ids = list(dict.fromkeys(point_id_for(n) for n in node_ids))
        records = self._call("read", lambda: self.client.retrieve(
            self.collection_name, ids=ids, with_payload=[NODE_ID_KEY, "url", "title"]))
        return {r.payload[NODE_ID_KEY]: (r.payload.get("url") or r.payload.get("title")) for r in records}

    def ids_of_articles(self, keys: Sequence[str], filters: Optional[Any] = None, limit: int = 100) -> Dict[str, str]:
        """node id -> article key (url, else title) of the points of these articles (`filters`: as `query`)."""
        self._check()
        if not keys or not self._exists:
            return {}
        flt = server_filter(filters)
        out: Dict[str, str] = {}
        for field in ("url", "title"):
            condition = models.FieldCondition(key=field, match=models.MatchAny(any=list(keys)))
            where = all_of(condition, flt)
            records, _ = self._call("read", lambda: self.client.scroll(
                self.collection_name, scroll_filter=where, limit=limit, with_payload=[NODE_ID_KEY, "url", "title"]))
            for record in records:
                key = record.payload.get("url") or record.payload.get("title")
                if key in keys:
                    out.setdefault(record.payload[NODE_ID_KEY], key)
        return out
