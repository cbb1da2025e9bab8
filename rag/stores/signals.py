"""The lexical and caption signals of one collection, in a qdrant-edge shard beside it.

Each collection (text, image) keeps its dense vectors where they always were; this store
adds, per point (same node ids):

* ``bm25``: a BM25 sparse vector (qdrant-edge's own `Bm25`, English stemming and stop
  words; IDF applied by the engine at query time, `Modifier.Idf`) of the passage, or of
  the image's own words (title, caption, alt text, file name);
* ``words`` (images only): those words embedded with the text model.

Its payload holds the point's metadata (not the node itself), so every filter a search
takes applies to these signals too. Keeping the signals beside the dense collection means
an index built before them gains them by reading its own payloads (`rag migrate
--signals`), with no image embedded again, and any dense backend can have them.

Layout (``path``): ``rag_signals.json`` (format, kind, text-model dimension, BM25 settings)
and ``shard/``. What a point holds is built by `rag.stores.signal_points`, shared with the
server store (`rag.stores.server_signals`), so both backends hold identical vectors.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import qdrant_edge as qe

from rag.errors import StorageError
from rag.stores.payload import point_id_for
from rag.stores.signal_points import (  # noqa: F401  (SignalPoint and the constants re-exported)
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
    words_vector_of,
)

META_FILE = "rag_signals.json"
SHARD_DIR = "shard"
BATCH = 256


def _engine_filter(filters: Any) -> Optional[Any]:
    """LlamaIndex `MetadataFilters` as a qdrant-edge filter (None: no filter)."""
    if filters is None:
        return None
    from rag.stores.edge_filters import build_filter

    return build_filter(filters)


class SignalStore:
    """BM25 (and, for images, caption-word vectors) for the points of one collection."""

    def __init__(self, path: os.PathLike, kind: str) -> None:
        self.path = Path(path)
        self.kind = check_kind(kind)
        self._lock = threading.RLock()
        self._shard: Any = None
        self._words_dim: Optional[int] = None
        self._closed = False
        # a store written by another version, or damaged, opens anyway (so that `rag migrate
        # --signals` can rebuild it); every use but `drop` then raises this message
        self._broken: Optional[str] = None
        try:
            meta = self._read_meta()
        except StorageError as exc:
            self._broken, meta = str(exc), None
        self.avg_len = float(meta.get("avg_len", AVG_LEN[kind])) if meta else AVG_LEN[kind]
        if meta and (self.path / SHARD_DIR / "edge_config.json").exists():
            self._words_dim = meta.get("words_dim")
            self._shard = self._engine("open", lambda: qe.EdgeShard.load(str(self.path / SHARD_DIR)))

    # -- lifecycle -------------------------------------------------------------------
    def _read_meta(self) -> Optional[dict]:
        file = self.path / META_FILE
        if not file.is_file():
            return None
        try:
            meta = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise StorageError(f"{file} cannot be read ({exc}); rebuild it with: rag migrate --signals") from None
        if meta.get("format") != SIGNALS_FORMAT or meta.get("kind") != self.kind:
            raise StorageError(f"{file} is not {'an' if self.kind == 'image' else 'a'} {self.kind} signal store of format {SIGNALS_FORMAT}; "
                               "rebuild it with: rag migrate --signals")
        return meta

    def _engine(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # the binding raises plain Exception
            if "WouldBlock" in str(exc):
                raise StorageError(f"{self.path} is in use by another process") from None
            raise StorageError(f"cannot {what} the signal shard at {self.path}: {exc}") from exc

    def exists(self) -> bool:
        """Has this store been built (possibly empty)?"""
        return (self.path / META_FILE).is_file()

    def _check(self) -> None:
        if self._broken:
            raise StorageError(self._broken)

    def _create(self, words_dim: Optional[int]) -> Any:
        vectors = {}
        if self.kind == "image":
            if not words_dim:
                raise ValueError("an image signal store needs the text model's dimension")
            vectors["words"] = qe.EdgeVectorParams(size=words_dim, distance=qe.Distance.Cosine)
        config = qe.EdgeConfig(
            vectors=vectors or None,
            sparse_vectors={"bm25": qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
        )
        self.path.mkdir(parents=True, exist_ok=True)
        if (self.path / SHARD_DIR).exists():
            shutil.rmtree(self.path / SHARD_DIR)
        shard = self._engine("create", lambda: qe.EdgeShard.create(str(self.path / SHARD_DIR), config))
        for key in INDEXED_KEYS:
            shard.update(qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword))
        meta = {"format": SIGNALS_FORMAT, "kind": self.kind, "words_dim": words_dim, "avg_len": self.avg_len,
                "bm25": dict(BM25_PARAMS)}
        tmp = self.path / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(tmp, self.path / META_FILE)
        self._words_dim = words_dim
        return shard

    def ensure(self, words_dim: Optional[int] = None) -> None:
        """Create the (empty) store now if it does not exist yet."""
        self._check()
        with self._lock:
            if self._shard is None:
                self._shard = self._create(words_dim)

    def close(self) -> None:
        with self._lock:
            if self._shard is not None and not self._closed:
                self._shard.flush()
                self._shard.close()
            self._shard = None
            self._closed = True

    def drop(self) -> None:
        """Delete everything this store holds: afterwards it is not built (`exists()` is False)."""
        with self._lock:
            if self._shard is not None and not self._closed:
                self._shard.close()
            self._shard = None
            self._words_dim = None
            self._closed = False
            self._broken = None
            self.avg_len = AVG_LEN[self.kind]
            shutil.rmtree(self.path, ignore_errors=True)

    def optimize(self) -> bool:
        """Build the engine's indexes over new points (blocking)."""
        self._check()
        with self._lock:
            return bool(self._shard.optimize()) if self._shard is not None else False

    # -- writes ----------------------------------------------------------------------
    def build_points(self, items: Sequence[SignalPoint]) -> List[Any]:
        """Engine points for the items (pure apart from the BM25 tokenizer)."""
        points = []
        for item in items:
            vector: Dict[str, Any] = {"bm25": bm25_document(item.text, self.avg_len)}
            words = words_vector_of(item, self.kind)
            if words is not None:
                vector["words"] = words
            points.append(qe.Point(point_id_for(item.node_id), vector, signal_payload(item)))
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
                raise StorageError(f"the signal store at {self.path} is closed")
            if self._shard is None:
                self._shard = self._create(dims.pop() if dims else None)
            elif dims and dims != {self._words_dim}:
                raise ValueError(f"words vectors of size {sorted(dims)}, but {self.path} holds {self._words_dim}")
            for start in range(0, len(points), BATCH):
                self._shard.update(qe.UpdateOperation.upsert_points(points[start:start + BATCH]))

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Drop the signals of every node of these documents."""
        self._check()
        with self._lock:
            if self._shard is None or not doc_ids:
                return
            condition = qe.FieldCondition(DOC_ID_KEY, match=qe.MatchAny(list(doc_ids)))
            self._shard.update(qe.UpdateOperation.delete_points_by_filter(qe.Filter(must=[condition])))

    def count(self) -> int:
        """Exact number of points (0 before the store is built)."""
        self._check()
        with self._lock:
            if self._shard is None:
                return 0
            return int(self._shard.count(qe.CountRequest(exact=True)))

    # -- reads -----------------------------------------------------------------------
    def query(self, text: str = "", words_vector: Optional[List[float]] = None, limit: int = 20,
              filters: Optional[Any] = None, point_ids: bool = False) -> Dict[str, List[Tuple[str, float]]]:
        """The ``bm25`` (when `text` has a word BM25 keeps) and ``words`` legs: node ids, best first.

        `filters`: LlamaIndex `MetadataFilters` on the nodes' flat metadata. `point_ids`: the
        points' ids (`point_id_for` of the node ids) instead, and no payload is read (faster).
        """
        self._check()
        flt = _engine_filter(filters)
        legs: Dict[str, Any] = {}
        if text:
            sparse = bm25_query(text, self.avg_len)
            if sparse.indices:
                legs["bm25"] = qe.Query.Nearest(sparse, using="bm25")
        if words_vector is not None and self.kind == "image":
            legs["words"] = qe.Query.Nearest(list(words_vector), using="words")
        with self._lock:
            if self._shard is None or not legs or limit <= 0:
                return {}
            requests = [qe.QueryRequest(limit=limit, query=q, filter=flt, with_payload=False if point_ids else [NODE_ID_KEY])
                        for q in legs.values()]
            results = self._shard.query_batch(qe.QueryBatchRequest(requests))
        return {name: [(str(p.id) if point_ids else p.payload[NODE_ID_KEY], float(p.score)) for p in points]
                for name, points in zip(legs, results)}

    def article_keys(self, node_ids: Sequence[str]) -> Dict[str, Optional[str]]:
        """node id -> article key (url, else title) for these nodes, from the payload alone."""
        self._check()
        if not node_ids:
            return {}
        with self._lock:
            if self._shard is None:
                return {}
            condition = qe.HasIdCondition({point_id_for(n) for n in node_ids})
            records, _ = self._shard.scroll(qe.ScrollRequest(limit=len(node_ids), filter=qe.Filter(must=[condition]),
                                                             with_payload=[NODE_ID_KEY, "url", "title"]))
        return {r.payload[NODE_ID_KEY]: (r.payload.get("url") or r.payload.get("title")) for r in records}

    def ids_of_articles(self, keys: Sequence[str], filters: Optional[Any] = None, limit: int = 100) -> Dict[str, str]:
        """node id -> article key (url, else title) of the points of these articles (`filters`: as `query`)."""
        self._check()
        if not keys:
            return {}
        flt = _engine_filter(filters)
        out: Dict[str, str] = {}
        with self._lock:
            if self._shard is None:
                return {}
            for field in ("url", "title"):
                condition = qe.FieldCondition(field, match=qe.MatchAny(list(keys)))
                must = [condition] + ([flt] if flt is not None else [])
                records, _ = self._shard.scroll(qe.ScrollRequest(limit=limit, filter=qe.Filter(must=must),
                                                                 with_payload=[NODE_ID_KEY, "url", "title"]))
                for record in records:
                    payload = record.payload
                    key = payload.get("url") or payload.get("title")
                    if key in keys:
                        out.setdefault(payload[NODE_ID_KEY], key)
        return out
