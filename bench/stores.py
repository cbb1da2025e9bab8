"""Embedded vector stores side by side: QdrantEdgeVectorStore vs qdrant-client local mode.

Both are driven the way LlamaIndex users drive them: ``store.add(nodes)`` in batches of
64 and ``store.query(VectorStoreQuery(...))`` for the top 10, over the same seeded data.
Each backend runs in its own subprocess, so peak RSS figures do not mix.

    python bench/stores.py                      # N = 10,000
    python bench/stores.py --sizes 10000 100000
    python bench/stores.py --sizes 100000 --max-local-points 20000   # extrapolate local

Data: 512-d unit vectors with a 32-d latent structure plus isotropic noise (like real
embeddings, whose intrinsic dimension is far below 512), queries drawn the same way;
payload has a keyword field ``group`` (10 values) used for the filtered queries.
``--data iid`` uses i.i.d. Gaussian vectors instead: no neighbourhood structure, the
worst case for any approximate index.

Measured per backend: upsert time (all add() calls returned; for qdrant-edge also the
time until the HNSW graph covers every point), p50/p95 query latency with and without
the filter, reopen time (open + first query), disk size (allocated blocks), peak RSS
(and the harness's own RSS before the store is created), and for qdrant-edge recall@10
of the HNSW search against its exact search.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

LATENT_DIM = 32
NOISE = 0.1
N_GROUPS = 10
FILTER_GROUP = "g3"


# ------------------------------------------------------------------ data


def make_vectors(n: int, dim: int, seed: int, kind: str) -> np.ndarray:
    """Seeded unit vectors; the latent map A depends only on dim (shared by data and queries)."""
    rng = np.random.default_rng(seed)
    if kind == "iid":
        x = rng.standard_normal((n, dim), dtype=np.float32)
    else:
        a = np.random.default_rng(12345).standard_normal((dim, LATENT_DIM), dtype=np.float32)
        a /= np.sqrt(LATENT_DIM)
        z = rng.standard_normal((n, LATENT_DIM), dtype=np.float32)
        x = z @ a.T + NOISE * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def node_batches(x: np.ndarray, batch: int):
    """TextNodes built batch by batch, so the harness does not hold N nodes at once."""
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

    for start in range(0, len(x), batch):
        yield [
            TextNode(
                id_=str(uuid.UUID(int=i + 1)),
                text=f"passage {i}",
                metadata={"group": f"g{i % N_GROUPS}", "n": i},
                embedding=x[i].tolist(),
                relationships={
                    NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc{i // 10}")
                },
            )
            for i in range(start, min(len(x), start + batch))
        ]


def disk_usage(path: Path) -> Dict[str, int]:
    allocated = apparent = 0
    for root, _, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(root, f))
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return {"allocated": allocated, "apparent": apparent}


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentiles(ts: List[float]) -> Dict[str, float]:
    return {"p50_ms": float(np.median(ts) * 1e3), "p95_ms": float(np.percentile(ts, 95) * 1e3)}


# ---------------------------------------------------------------- worker


def timed_queries(store: Any, queries: np.ndarray, filters: Any, **kw: Any):
    from llama_index.core.vector_stores.types import VectorStoreQuery

    for q in queries[:5]:  # warm-up, untimed
        store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=10,
                                     filters=filters), **kw)
    ts, ids = [], []
    for q in queries:
        vq = VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=10, filters=filters)
        t = time.perf_counter()
        res = store.query(vq, **kw)
        ts.append(time.perf_counter() - t)
        ids.append(res.ids)
    return ts, ids


def recall(approx: List[List[str]], exact: List[List[str]]) -> float:
    return float(np.mean([len(set(a) & set(e)) / max(1, len(e)) for a, e in zip(approx, exact)]))


def engine_floor(x: np.ndarray, batch: int, workdir: Path) -> Dict[str, float]:
    """The engine alone, no LlamaIndex: what qdrant-edge-py's binding costs per upsert.

    Payloads are built untimed (the same ones the store writes); timed separately:
    turning them and the vectors into ``qe.Point``s (the binding converts every
    payload value to JSON) and ``EdgeShard.update`` with pre-built points. Both hold
    the GIL, so they add up. ``bare`` is the same with vectors and ids only.
    """
    import qdrant_edge as qe

    from rag.stores.payload import node_payload, point_id_for

    out: Dict[str, float] = {}
    for label, with_payload in (("", True), ("bare_", False)):
        shard = qe.EdgeShard.create(
            str(workdir / f"floor-{label or 'payload'}"),
            qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=x.shape[1], distance=qe.Distance.Cosine)),
        )
        for field in ("doc_id", "group"):  # the payload indexes the store keeps in this benchmark
            shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
        build = write = 0.0
        for nodes in node_batches(x, batch):
            rows = [(point_id_for(n.node_id), n.embedding, node_payload(n) if with_payload else None)
                    for n in nodes]
            t = time.perf_counter()
            points = [qe.Point(pid, vector, payload) for pid, vector, payload in rows]
            t2 = time.perf_counter()
            shard.update(qe.UpdateOperation.upsert_points(points))
            build, write = build + t2 - t, write + time.perf_counter() - t2
        shard.close()
        out[f"{label}points_s"], out[f"{label}update_s"] = build, write
    return out


def worker(args: argparse.Namespace) -> Dict[str, Any]:
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

    n = args.n
    x = make_vectors(n, args.dim, seed=0, kind=args.data)
    queries = make_vectors(args.queries, args.dim, seed=1, kind=args.data)
    flt = MetadataFilters(filters=[MetadataFilter(key="group", value=FILTER_GROUP)])
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{args.worker}-", dir=args.tmp))
    out: Dict[str, Any] = {"backend": args.worker, "n": n, "harness_rss_mb": rss_mb()}
    try:
        if args.worker == "edge":
            from rag.stores import QdrantEdgeVectorStore

            def open_store():
                return QdrantEdgeVectorStore(
                    workdir / "store",
                    hnsw_ef=args.hnsw_ef,
                    hnsw_m=args.hnsw_m,
                    hnsw_ef_construct=args.ef_construct,
                    quantization=None if args.quantization == "none" else args.quantization,
                    oversampling=args.oversampling,
                    index_threshold=args.index_threshold or None,
                    payload_indexes={"doc_id": "keyword", "group": "keyword"},
                )

            store = open_store()
            spent = build = 0.0
            indexed = 0
            for batch in node_batches(x, args.batch):  # node building is not timed
                t = time.perf_counter()
                store.add(batch)
                dt = time.perf_counter() - t
                spent += dt
                now = store.stats()["indexed_vectors"]
                if now != indexed:  # this add() ran an HNSW build
                    build, indexed = build + dt, now
            out["upsert_s"] = spent
            out["inline_index_s"] = build
            t = time.perf_counter()
            store.optimize()
            out["final_optimize_s"] = time.perf_counter() - t
            out["stats"] = store.stats()
            assert store.count() == n
            for f in (None, flt):  # one untimed pass: page in the mmap'd vectors and payloads
                timed_queries(store, queries, f)
            for name, f in (("nofilter", None), ("filter", flt)):
                ts, approx = timed_queries(store, queries, f)
                out[f"query_{name}"] = percentiles(ts)
                ts_e, exact = timed_queries(store, queries, f, exact=True)
                out[f"exact_{name}"] = percentiles(ts_e)
                out[f"recall_{name}"] = recall(approx, exact)
                for ef in args.ef_sweep:
                    ts, approx = timed_queries(store, queries, f, hnsw_ef=ef)
                    out.setdefault("sweep", []).append(
                        {"filter": name, "ef": ef, "recall": recall(approx, exact), **percentiles(ts)}
                    )
            store.close()
            out["disk"] = disk_usage(workdir / "store")
            t = time.perf_counter()
            store = open_store()
            timed_queries(store, queries[:1], None)
            out["reopen_s"] = time.perf_counter() - t
            store.close()
            out["floor"] = engine_floor(x, args.batch, workdir)
        else:
            import warnings

            from llama_index.vector_stores.qdrant import QdrantVectorStore
            from qdrant_client import QdrantClient

            warnings.filterwarnings("ignore", message=".*[Ll]ocal mode.*")
            path = str(workdir / "local")

            def open_store():
                client = QdrantClient(path=path)
                return client, QdrantVectorStore(client=client, collection_name="bench")

            client, store = open_store()
            m = min(n, args.max_local_points or n)
            spent, marks = 0.0, []
            for batch in node_batches(x[:m], args.batch):  # node building is not timed
                t = time.perf_counter()
                store.add(batch)
                spent += time.perf_counter() - t
                done = int(batch[-1].metadata["n"]) + 1
                if done % 10_000 < args.batch:
                    marks.append((done, round(spent, 2)))
            out["upsert_s"] = spent
            out["upsert_marks"] = marks
            out["measured_points"] = m
            if m < n:  # extrapolated linearly from the measured rate: labelled as such
                out["upsert_s_extrapolated"] = out["upsert_s"] * n / m
            nq = min(args.queries, args.local_queries)
            for name, f in (("nofilter", None), ("filter", flt)):
                ts, _ = timed_queries(store, queries[:nq], f)
                out[f"query_{name}"] = percentiles(ts)
            client.close()
            out["disk"] = disk_usage(Path(path))
            t = time.perf_counter()
            client, store = open_store()
            timed_queries(store, queries[:1], None)
            out["reopen_s"] = time.perf_counter() - t
            client.close()
        out["peak_rss_mb"] = peak_rss_mb()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


# ---------------------------------------------------------------- parent


def run_worker(backend: str, n: int, args: argparse.Namespace) -> Dict[str, Any]:
    cmd = [
        sys.executable, os.path.abspath(__file__), "--worker", backend, "--n", str(n),
        "--dim", str(args.dim), "--queries", str(args.queries), "--batch", str(args.batch),
        "--hnsw-ef", str(args.hnsw_ef), "--hnsw-m", str(args.hnsw_m),
        "--ef-construct", str(args.ef_construct), "--data", args.data,
        "--quantization", args.quantization, "--oversampling", str(args.oversampling),
        "--index-threshold", str(args.index_threshold), "--ef-sweep", *map(str, args.ef_sweep),
        "--local-queries", str(args.local_queries),
        "--max-local-points", str(args.max_local_points or 0),
    ]
    if args.tmp:
        cmd += ["--tmp", args.tmp]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{backend} worker failed (N={n}):\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t
    print(f"  {backend:5s} N={n}: done in {res['wall_s']:.0f}s", file=sys.stderr, flush=True)
    return res


def fmt_mb(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def table(n: int, edge: Dict[str, Any], local: Dict[str, Any]) -> str:
    ext = local.get("upsert_s_extrapolated")
    local_up = ext if ext else local["upsert_s"]
    local_up_txt = (
        f"{ext:,.1f} s (extrapolated from {local['measured_points']:,} pts: "
        f"{local['upsert_s']:.1f} s)" if ext else f"{local['upsert_s']:,.1f} s"
    )
    rows = [
        ("upsert, all add() calls returned",
         f"{edge['upsert_s']:.1f} s ({n / edge['upsert_s']:,.0f} pts/s)",
         f"{local_up_txt} ({n / local_up:,.0f} pts/s)",
         f"{local_up / edge['upsert_s']:.1f}x"),
        ("  of which HNSW builds inside add()", f"{edge['inline_index_s']:.1f} s", "n/a (no index)", ""),
        ("HNSW graph build, optimize() after the load", f"{edge['final_optimize_s']:.1f} s",
         "n/a (no index)", ""),
        ("upsert + optimize() (every point in the graph)",
         f"{edge['upsert_s'] + edge['final_optimize_s']:.1f} s", "",
         f"{local_up / (edge['upsert_s'] + edge['final_optimize_s']):.1f}x"),
        ("points in the HNSW graph / searched exhaustively",
         f"{edge['stats']['indexed_vectors']:,} / {n - edge['stats']['indexed_vectors']:,}",
         f"0 / {n:,}", ""),
    ]
    fl = edge["floor"]
    for label, points_s, update_s in (
        ("same payloads", fl["points_s"], fl["update_s"]),
        ("vectors and ids only", fl["bare_points_s"], fl["bare_update_s"]),
    ):
        rows.append((f"  engine alone, {label}: qe.Point() + update()",
                     f"{points_s:.1f} + {update_s:.1f} = {points_s + update_s:.1f} s", "",
                     f"{local_up / (points_s + update_s):.1f}x"))
    for name, label in (("nofilter", "no filter"), ("filter", f"filter group={FILTER_GROUP}")):
        e, l_ = edge[f"query_{name}"], local[f"query_{name}"]
        rows.append((f"query top-10, {label}: p50", f"{e['p50_ms']:.2f} ms",
                     f"{l_['p50_ms']:.1f} ms", f"{l_['p50_ms'] / e['p50_ms']:.0f}x"))
        rows.append((f"query top-10, {label}: p95", f"{e['p95_ms']:.2f} ms",
                     f"{l_['p95_ms']:.1f} ms", f"{l_['p95_ms'] / e['p95_ms']:.0f}x"))
        ee = edge[f"exact_{name}"]
        rows.append((f"  (edge exact search, {label}: p50 / p95)",
                     f"{ee['p50_ms']:.2f} / {ee['p95_ms']:.2f} ms", "", ""))
        rows.append((f"recall@10 HNSW vs exact, {label}", f"{edge[f'recall_{name}']:.3f}",
                     "1 (brute force)", ""))
    rows += [
        ("reopen (open + first query)", f"{edge['reopen_s']:.2f} s", f"{local['reopen_s']:.2f} s",
         f"{local['reopen_s'] / edge['reopen_s']:.1f}x"),
        ("disk (allocated)", fmt_mb(edge["disk"]["allocated"]),
         fmt_mb(local["disk"]["allocated"])
         + (f" for {local['measured_points']:,} pts" if local.get("upsert_s_extrapolated") else ""),
         f"{local['disk']['allocated'] / edge['disk']['allocated']:.2f}x"),
        ("peak RSS (harness alone)",
         f"{edge['peak_rss_mb']:,.0f} MiB ({edge['harness_rss_mb']:,.0f})",
         f"{local['peak_rss_mb']:,.0f} MiB ({local['harness_rss_mb']:,.0f})",
         f"{local['peak_rss_mb'] / edge['peak_rss_mb']:.1f}x"),
    ]
    for sw in edge.get("sweep", []):
        label = "no filter" if sw["filter"] == "nofilter" else f"filter group={FILTER_GROUP}"
        rows.append((f"  hnsw_ef={sw['ef']}, {label}: recall@10, p50 / p95",
                     f"{sw['recall']:.3f}, {sw['p50_ms']:.2f} / {sw['p95_ms']:.2f} ms", "", ""))
    out = [f"#### N = {n:,}", "",
           "| metric | qdrant-edge | qdrant-client local | local / edge |",
           "| --- | --- | --- | --- |"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(out)


def versions() -> str:
    from importlib.metadata import version

    pkgs = ["qdrant-edge-py", "qdrant-client", "llama-index-core", "llama-index-vector-stores-qdrant",
            "numpy"]
    return ", ".join(f"{p} {version(p)}" for p in pkgs) + f", Python {platform.python_version()}"


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=200, help="queries per kind for qdrant-edge")
    p.add_argument("--local-queries", type=int, default=100, help="queries per kind for local mode")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hnsw-ef", type=int, default=128)
    p.add_argument("--hnsw-m", type=int, default=16)
    p.add_argument("--ef-construct", type=int, default=100)
    p.add_argument("--quantization", choices=["int8", "none"], default="int8")
    p.add_argument("--oversampling", type=float, default=2.0)
    p.add_argument("--index-threshold", type=int, default=0,
                   help="qdrant-edge builds the graph inside the add() that leaves this many points "
                        "unindexed (0, the store's default: only the optimize() after the load)")
    p.add_argument("--ef-sweep", type=int, nargs="*", default=[64, 256],
                   help="extra hnsw_ef values to report recall/latency for (qdrant-edge)")
    p.add_argument("--data", choices=["latent", "iid"], default="latent")
    p.add_argument("--max-local-points", type=int, default=0,
                   help="upsert at most this many points into local mode and extrapolate (0: all)")
    p.add_argument("--backends", nargs="+", default=["edge", "local"])
    p.add_argument("--tmp", default=None, help="directory for the stores (default: system tmp)")
    p.add_argument("--json", default=None, help="also write raw results here")
    p.add_argument("--worker", choices=["edge", "local"], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args)))
        return

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; {versions()}")
    print(f"command: python bench/stores.py {' '.join(sys.argv[1:])}")
    print(f"data: {args.dim}-d unit vectors ({args.data}), batches of {args.batch}, top-10; "
          f"qdrant-edge: HNSW m={args.hnsw_m} ef_construct={args.ef_construct} "
          f"ef={args.hnsw_ef}, quantization={args.quantization} "
          f"(oversampling {args.oversampling}), graph built "
          + (f"inside add() every {args.index_threshold} points" if args.index_threshold
             else "by one optimize() after the load") + "\n")
    results = []
    for n in args.sizes:
        res = {b: run_worker(b, n, args) for b in args.backends}
        results.append(res)
        if {"edge", "local"} <= set(res):
            print(table(n, res["edge"], res["local"]) + "\n", flush=True)
        else:
            print(json.dumps(res, indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
