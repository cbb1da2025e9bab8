"""Query latency: `rag search` against the stock LlamaIndex multimodal retriever.

    python bench/query.py                                # 10,000 and 100,000 points
    python bench/query.py --sizes 10000 --queries 30     # quicker
    python bench/query.py --max-stock-points 10000       # stock only where practical

Points are synthesized straight into the stores (seeded random unit vectors, payloads shaped
like the ones `rag ingest` writes: a 60-200 word passage, title, file path, hash), N per
collection (text and image), not embedded: this measures the query path only.

In-process latency, models loaded and warmed up (5 queries), then `--queries` of each kind:

- ours: `rag.search.retriever.Retriever.search` over the default embedded store (qdrant-edge),
  default precision; query encoders run concurrently, as traced graphs from their second query
  (`RAG_TEXT_GRAPH`; `--also-text-graph off` adds the eager column in the same run).
- stock: `MultiModalVectorStoreIndex.from_vector_store(...).as_retriever(similarity_top_k=5,
  image_similarity_top_k=3)` over two `QdrantVectorStore`s on one `QdrantClient(path=...)`,
  `HuggingFaceEmbedding` and the stock CLIP embedding (emulated, see bench/common.py);
  encoders run one after the other, as the stock retriever does.

Kinds: `text` (passages top 5 + images top 3 for a text query, ours: every signal fused -
dense and BM25 over passages, CLIP, the images' words and the article link over images),
`text, dense only` (ours: the same query on the dense vectors only, BGE and CLIP's text tower;
stock: its text query again),
`text, passages only` (`--image-top-k 0`: BGE only), `image` (images top 3 for a query image),
`text + image` (ours: one joint query; stock has none, so `retrieve(text)` then
`image_to_image_retrieve(image)`). Every query gets a fresh string (stock defect 2 never bites).
Ours also: `search only: ...` (`HybridSearch.search` on fresh seeded random unit vectors, no
encoder: fused; dense only; dense only with legs that read every candidate's payload, as before
2 December 2026), the search's own cost with query vectors spread as real ones are.
Text queries are 5-10 words, with BGE's query instruction prepended on both sides.

Cold start: wall time of the `rag search` command in a fresh process over the existing index
(interpreter start, imports, model loading, store opening, the query, printing), and of the
stock equivalent (a script doing the stock imports, models, `QdrantClient(path=...)` and one
`retrieve`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    DEFAULT_CACHE,
    REPO,
    emit_result,
    machine,
    make_image,
    make_passage,
    percentile,
    photo_paths,
    resolve_models,
    run_child,
    settings_with,
    stock_clip_class,
    wait_for_quiet,
)

HERE = Path(__file__).resolve()
KINDS = ("text", "text, dense only", "text, passages only", "image", "text + image")
# Ours only: the search after encoding, on seeded random unit query vectors. The random-weight
# stand-ins encode every query to nearly the same vector, so their queries keep finding the same
# (cached) points; real queries spread, and so do these.
SEARCH_ONLY_KINDS = ("search only: fused", "search only: dense only",
                     "search only: dense only, legs read payloads")
BGE_INSTRUCTION = "Represent this sentence for searching relevant passages: "
FILL_BATCH = 1000


# ------------------------------------------------------------------ synthetic data


def synth_nodes(kind: str, n: int, dim: int, seed: int, start: int = 0) -> List[Any]:
    """`n` nodes shaped like rag ingest's (text passages or images) with random unit vectors."""
    import numpy as np
    from llama_index.core.schema import ImageNode, NodeRelationship, RelatedNodeInfo, TextNode

    from common import _words

    rng = np.random.default_rng(seed + start)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = _words()
    text_rng = random.Random(seed + start)
    nodes = []
    for i in range(n):
        k = start + i
        doc_id = str(uuid.UUID(int=text_rng.getrandbits(128)))
        title = " ".join(text_rng.choice(words) for _ in range(2)).capitalize() + f" {k}"
        meta = {"modality": kind, "file_path": f"/data/corpus/{kind}/{k:06d}." + ("txt" if kind == "text" else "jpg"),
                "file_name": f"{k:06d}", "sha256": f"{text_rng.getrandbits(256):064x}", "title": title}
        if kind == "text":
            node = TextNode(id_=str(uuid.UUID(int=text_rng.getrandbits(128))), text=make_passage(text_rng, words),
                            metadata={**meta, "chunk": 0})
            node.excluded_embed_metadata_keys = list(node.metadata)
            node.excluded_llm_metadata_keys = [key for key in node.metadata if key != "title"]
        else:
            node = ImageNode(id_=str(uuid.UUID(int=text_rng.getrandbits(128))), image_path=meta["file_path"],
                             text="", metadata=meta)
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc_id)
        node.embedding = vectors[i].tolist()
        nodes.append(node)
    return nodes


def fill(store: Any, kind: str, n: int, dim: int, seed: int) -> None:
    for start in range(0, n, FILL_BATCH):
        store.add(synth_nodes(kind, min(FILL_BATCH, n - start), dim, seed, start))


def fill_signals(signals: Any, kind: str, n: int, text_dim: int, seed: int) -> None:
    """The signal store of one collection for the synthesized nodes: BM25 of their words, and
    random unit `words` vectors (of the text model's size) for images."""
    import numpy as np

    from rag.index.signals import text_signal_points
    from rag.stores.signals import SignalPoint

    rng = np.random.default_rng(seed + 7)
    for start in range(0, n, FILL_BATCH):
        nodes = synth_nodes(kind, min(FILL_BATCH, n - start), 8, seed, start)
        if kind == "text":
            signals.add(text_signal_points(nodes))
            continue
        vectors = rng.standard_normal((len(nodes), text_dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        signals.add([SignalPoint(node.node_id, node.ref_doc_id, node.metadata, node.metadata["title"], v.tolist())
                     for node, v in zip(nodes, vectors)])


def model_dims(text_model: str, image_model: str) -> Dict[str, int]:
    import json as _json

    text = _json.loads((Path(text_model) / "config.json").read_text())
    image = _json.loads((Path(image_model) / "config.json").read_text())
    return {"text": int(text["hidden_size"]), "image": int(image.get("projection_dim", 512))}


def ours_settings(args: argparse.Namespace, storage: Path) -> Any:
    from rag.config import Settings

    settings = Settings.from_env(storage=storage, text_model=args.text_model, image_model=args.image_model)
    return settings_with(settings, text_query_instruction=args.query_instruction,
                         **({"precision": args.precision} if args.precision else {}),
                         **({"query_threads": args.query_threads} if getattr(args, "query_threads", None) else {}),
                         **({"text_graph": args.text_graph} if getattr(args, "text_graph", None) else {}))


def fill_ours(args: argparse.Namespace) -> Dict[str, Any]:
    from rag.index.core import RagIndex

    dims = model_dims(args.text_model, args.image_model)
    started = time.perf_counter()
    index = RagIndex(ours_settings(args, Path(args.storage)))
    for kind in ("text", "image"):
        store = getattr(index.stores, kind)
        fill(store, kind, args.n, dims[kind], args.seed + (0 if kind == "text" else 1))
        fill_signals(index.signals[kind], kind, args.n, dims["text"], args.seed + (0 if kind == "text" else 1))
        store.build_search_graph()  # the steady state: every point in the HNSW graph
        index.signals[kind].optimize()
    index.remember_models()
    index.ledger.save()
    counts = index.counts()
    index.close()
    return {"side": "ours", "fill_s": time.perf_counter() - started, "points": counts}


def stock_client(storage: Path) -> Any:
    import warnings

    warnings.filterwarnings("ignore")
    from qdrant_client import QdrantClient

    return QdrantClient(path=str(storage / "qdrant"))


def fill_stock(args: argparse.Namespace) -> Dict[str, Any]:
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    dims = model_dims(args.text_model, args.image_model)
    started = time.perf_counter()
    client = stock_client(Path(args.storage))
    for kind in ("text", "image"):
        fill(QdrantVectorStore(collection_name=kind, client=client), kind, args.n, dims[kind],
             args.seed + (0 if kind == "text" else 1))
    counts = {kind: client.count(kind, exact=True).count for kind in ("text", "image")}
    client.close()
    return {"side": "stock", "fill_s": time.perf_counter() - started, "points": counts}


# ------------------------------------------------------------------ queries


def query_texts(n: int, seed: int) -> List[str]:
    from common import _words

    rng = random.Random(seed)
    words = _words()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 10))) for _ in range(n)]


def query_images(folder: Path, n: int, seed: int) -> List[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sources = [Image.open(p).convert("RGB") for p in photo_paths()]
    paths = []
    for i in range(n):
        path = folder / f"q{i:03d}.jpg"
        if not path.is_file():
            make_image(rng, sources[i % len(sources)]).save(path, quality=90)
        paths.append(str(path))
    return paths


def timed_runs(run: Any, texts: List[str], images: List[str], warmup: int, count: int,
               kinds: Any = KINDS) -> Dict[str, Any]:
    """Latency per kind, the kinds interleaved query by query (round robin), so that none of
    them pays alone for a warming cache or a burst of other load."""
    latencies: Dict[str, List[float]] = {kind: [] for kind in kinds}
    for i in range(warmup + count):
        for kind in kinds:
            text, image = texts[i % len(texts)] + f" {i}", images[i % len(images)]
            started = time.perf_counter()
            hits = run(kind, text, image)
            elapsed = time.perf_counter() - started
            if not hits:
                raise RuntimeError(f"{kind}: no hits")
            if i >= warmup:
                latencies[kind].append(elapsed * 1000)
    out = {}
    for kind, values in latencies.items():
        out[kind] = {"p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95),
                     "mean_ms": sum(values) / len(values), "n": len(values)}
        print(kind, json.dumps(out[kind]), file=sys.stderr, flush=True)
    return out


def latency_ours(args: argparse.Namespace) -> Dict[str, Any]:
    from rag.models.precision import resolve_precision
    from rag.index.core import RagIndex
    from rag.search.retriever import Retriever
    from rag.search.signals import FusionSettings

    settings = ours_settings(args, Path(args.storage))
    dense_only = FusionSettings().using("dense", "clip")
    index = RagIndex(settings)
    index.text_embedding, index.image_embedding  # noqa: B018 - models loaded before timing
    retriever = Retriever(index)
    search_only = search_only_runner(index, retriever, args.seed)

    def run(kind: str, text: str, image: str) -> Any:
        if kind in SEARCH_ONLY_KINDS:
            return search_only(kind, text)
        if kind == "text":
            return retriever.search(text)
        if kind == "text, dense only":
            return retriever.search(text, fusion=dense_only)
        if kind == "text, passages only":
            return retriever.search(text, image_top_k=0)
        if kind == "image":
            return retriever.search("", image=image)
        return retriever.search(text, image=image)

    texts, images = query_texts(200, args.seed), query_images(Path(args.cache) / "query-images", 20, args.seed)
    result = timed_runs(run, texts, images, args.warmup, args.queries, KINDS + SEARCH_ONLY_KINDS)
    index.close()
    return {"side": "ours", "precision": resolve_precision(getattr(settings, "precision", "auto"), "cpu"),
            "store": "qdrant-edge", "kinds": result}


def search_only_runner(index: Any, retriever: Any, seed: int) -> Any:
    """`run(kind, text)` for SEARCH_ONLY_KINDS: `HybridSearch.search` as `Retriever.search` calls it
    for a text query (5 passages, 3 images), given fresh random unit vectors instead of encoding.
    "legs read payloads" is the dense legs as they were before 2 December 2026: the LlamaIndex
    query, every candidate's payload read (the fused search now reads ids and scores only)."""
    import numpy as np

    from rag.search.hybrid import HybridSearch, leg_of_nodes, store_query
    from rag.search.signals import FusionSettings

    stores = {"text": index.stores.text, "image": index.stores.image}
    reading = HybridSearch(
        dense_query=lambda kind, vector, limit, filters, nodes: leg_of_nodes(
            *store_query(stores[kind], vector, limit, filters), nodes),
        get_nodes=retriever.hybrid.get_nodes, signals=index.signals)
    rng = np.random.default_rng(seed + 1000)

    def unit(dim: int) -> List[float]:
        vector = rng.standard_normal(dim)
        return (vector / np.linalg.norm(vector)).tolist()

    def run(kind: str, text: str) -> Any:
        vectors = {"text": unit(stores["text"].dim), "clip_text": unit(stores["image"].dim)}
        fused = kind == "search only: fused"
        settings = retriever.fusion if fused else FusionSettings().using("dense", "clip")
        search = reading if kind.endswith("legs read payloads") else retriever.hybrid
        return search.search(text, vectors, top_k=5, image_top_k=3, filters=None, settings=settings,
                             want_text=True, want_images=True)

    return run


def stock_retriever(args: argparse.Namespace, client: Any) -> Any:
    from llama_index.core.indices.multi_modal import MultiModalVectorStoreIndex
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    text_model = HuggingFaceEmbedding(model_name=args.text_model, query_instruction=args.query_instruction or None)
    image_model = stock_clip_class()(model_name=args.image_model)
    index = MultiModalVectorStoreIndex.from_vector_store(
        vector_store=QdrantVectorStore(collection_name="text", client=client),
        image_vector_store=QdrantVectorStore(collection_name="image", client=client),
        embed_model=text_model, image_embed_model=image_model)
    return index.as_retriever(similarity_top_k=5, image_similarity_top_k=3)


def latency_stock(args: argparse.Namespace) -> Dict[str, Any]:
    client = stock_client(Path(args.storage))
    retriever = stock_retriever(args, client)

    def run(kind: str, text: str, image: str) -> Any:
        if kind in ("text", "text, dense only"):
            return retriever.retrieve(text)
        if kind == "text, passages only":
            return retriever.text_retrieve(text)
        if kind == "image":
            return retriever.image_to_image_retrieve(image)
        return retriever.retrieve(text) + retriever.image_to_image_retrieve(image)

    texts, images = query_texts(200, args.seed), query_images(Path(args.cache) / "query-images", 20, args.seed)
    result = timed_runs(run, texts, images, args.warmup, args.queries)
    client.close()
    return {"side": "stock", "precision": "fp32", "store": "qdrant-client local", "kinds": result}


def stock_cold(args: argparse.Namespace) -> Dict[str, Any]:
    """One stock text query from a fresh process (the parent times the whole process)."""
    client = stock_client(Path(args.storage))
    hits = stock_retriever(args, client).retrieve("where is the moon and the stars")
    for hit in hits:
        print(f"{hit.score:.3f} {hit.node.node_id}")
    client.close()
    return {"hits": len(hits)}


# ------------------------------------------------------------------ parent


def cold_start_runs(cmd: List[str], env: Dict[str, str], runs: int) -> Dict[str, Any]:
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return {"runs": runs, "min_s": min(walls), "median_s": percentile(walls, 50), "max_s": max(walls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="points per collection")
    parser.add_argument("--queries", type=int, default=40, help="timed queries per kind")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--max-stock-points", type=int, default=100_000,
                        help="skip the stock side above this many points per collection")
    parser.add_argument("--text-model")
    parser.add_argument("--image-model")
    parser.add_argument("--precision", help="ours: fp32 | bf16 | int8 | auto")
    parser.add_argument("--query-threads", type=int, help="ours: RAG_QUERY_THREADS (default: the setting's)")
    parser.add_argument("--also-query-threads", type=int, nargs="*", default=[], metavar="N",
                        help="ours again with RAG_QUERY_THREADS=N, in the same run (a column each)")
    parser.add_argument("--text-graph", choices=["on", "off"], help="ours: RAG_TEXT_GRAPH (default: the setting's)")
    parser.add_argument("--also-text-graph", choices=["on", "off"], nargs="*", default=[], metavar="ON_OFF",
                        help="ours again with RAG_TEXT_GRAPH=ON_OFF, in the same run (a column each)")
    parser.add_argument("--query-instruction", default=BGE_INSTRUCTION, help="prepended to text queries on both sides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--wait-quiet", type=float, default=120.0)
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--worker", choices=["fill-ours", "fill-stock", "latency-ours", "latency-stock", "stock-cold"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        work = {"fill-ours": fill_ours, "fill-stock": fill_stock, "latency-ours": latency_ours,
                "latency-stock": latency_stock, "stock-cold": stock_cold}[args.worker]
        emit_result(work(args))
        return

    models = resolve_models(args.text_model, args.image_model, args.cache)
    header = {"machine": machine(), "models": models["note"]}
    print(json.dumps(header, indent=1))
    common = ["--text-model", models["text"], "--image-model", models["image"], "--cache", str(args.cache),
              "--seed", str(args.seed), "--query-instruction", args.query_instruction,
              "--queries", str(args.queries), "--warmup", str(args.warmup)]
    if args.precision:
        common += ["--precision", args.precision]
    if args.query_threads:
        common += ["--query-threads", str(args.query_threads)]
    if args.text_graph:
        common += ["--text-graph", args.text_graph]
    variants = ([(f"ours, query threads {t}", ["--query-threads", str(t)]) for t in args.also_query_threads]
                + [(f"ours, text graph {g}", ["--text-graph", g]) for g in args.also_text_graph])
    results: Dict[str, Any] = {**header, "sizes": {}}
    for n in args.sizes:
        entry: Dict[str, Any] = {}
        for side in ("ours", "stock"):
            if side == "stock" and n > args.max_stock_points:
                entry["stock"] = {"skipped": f"more than --max-stock-points {args.max_stock_points}"}
                continue
            storage = args.cache / f"query-{n}-s{args.seed}" / side
            stamp = storage / "filled.json"
            if not stamp.is_file():
                shutil.rmtree(storage, ignore_errors=True)
                storage.mkdir(parents=True)
                print(f"filling {side} with {n} points per collection ...", file=sys.stderr, flush=True)
                filled = run_child(HERE, ["--worker", f"fill-{side}", "--n", str(n), "--storage", str(storage), *common])
                stamp.write_text(json.dumps(filled))
            filled = json.loads(stamp.read_text())
            share = wait_for_quiet(args.wait_quiet)
            print(f"{side} at {n}: in-process latency (other processes using {share:.0%}) ...", file=sys.stderr, flush=True)
            latency = run_child(HERE, ["--worker", f"latency-{side}", "--n", str(n), "--storage", str(storage), *common])
            entry[side] = {"fill": filled, **latency}
            for label, extra in variants if side == "ours" else []:
                print(f"{label} at {n} ...", file=sys.stderr, flush=True)
                entry[label] = run_child(HERE, ["--worker", "latency-ours", "--n", str(n), "--storage", str(storage),
                                                *common, *extra])
            if args.skip_cold:
                continue
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
            if side == "ours":
                env.update({"RAG_STORAGE": str(storage), "RAG_TEXT_MODEL": models["text"],
                            "RAG_IMAGE_MODEL": models["image"], "RAG_TEXT_QUERY_INSTRUCTION": args.query_instruction})
                if args.precision:
                    env["RAG_PRECISION"] = args.precision
                rag = [sys.executable, "-m", "rag.cli", "search"]
                entry[side]["cold"] = {
                    "text": cold_start_runs(rag + ["where is the moon and the stars"], env, args.cold_runs),
                    "text, passages only": cold_start_runs(rag + ["where is the moon and the stars", "--image-top-k", "0"],
                                                           env, args.cold_runs),
                }
            else:
                cmd = [sys.executable, str(HERE), "--worker", "stock-cold", "--n", str(n), "--storage", str(storage), *common]
                entry[side]["cold"] = {"text": cold_start_runs(cmd, env, args.cold_runs)}
            print(f"{side} at {n}: cold start {json.dumps(entry[side]['cold'])}", file=sys.stderr, flush=True)
        results["sizes"][str(n)] = entry
    print(format_tables(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def format_tables(results: Dict[str, Any]) -> str:
    variants = sorted({side for entry in results["sizes"].values() for side in entry if side.startswith("ours, ")})
    lines = ["| points per collection | query | ours p50 / p95 (ms) | "
             + "".join(f"{v} p50 / p95 (ms) | " for v in variants) + "stock p50 / p95 (ms) | stock / ours (p50) |",
             "| ---: | --- | ---: | " + "---: | " * len(variants) + "---: | ---: |"]
    for n, entry in results["sizes"].items():
        ours, stock = entry.get("ours", {}), entry.get("stock", {})
        for kind in KINDS + SEARCH_ONLY_KINDS:
            a = ours.get("kinds", {}).get(kind)
            b = stock.get("kinds", {}).get(kind)
            cell_a = f"{a['p50_ms']:.0f} / {a['p95_ms']:.0f}" if a else "-"
            cells_v = "".join(
                f"{v['p50_ms']:.0f} / {v['p95_ms']:.0f} | " if v else "- | "
                for v in (entry[variant].get("kinds", {}).get(kind) for variant in variants))
            cell_b = f"{b['p50_ms']:.0f} / {b['p95_ms']:.0f}" if b else "not run"
            ratio = f"{b['p50_ms'] / a['p50_ms']:.1f}x" if a and b else ""
            lines.append(f"| {int(n):,} | {kind} | {cell_a} | {cells_v}{cell_b} | {ratio} |")
    lines += ["", "| points per collection | cold start | ours median (min-max) s | stock median (min-max) s |",
              "| ---: | --- | ---: | ---: |"]
    for n, entry in results["sizes"].items():
        ours, stock = entry.get("ours", {}).get("cold", {}), entry.get("stock", {}).get("cold", {})
        for kind in ("text", "text, passages only"):
            a, b = ours.get(kind), stock.get(kind)
            if not a and not b:
                continue
            cell = lambda c: f"{c['median_s']:.1f} ({c['min_s']:.1f}-{c['max_s']:.1f})" if c else "-"  # noqa: E731
            lines.append(f"| {int(n):,} | `rag search` {kind} | {cell(a)} | {cell(b)} |")
    lines += ["", "| points per collection | fill (synthesized points) | ours s | stock s |", "| ---: | --- | ---: | ---: |"]
    for n, entry in results["sizes"].items():
        a = entry.get("ours", {}).get("fill", {}).get("fill_s")
        b = entry.get("stock", {}).get("fill", {}).get("fill_s")
        lines.append(f"| {int(n):,} | both collections | {a:.1f} | " + (f"{b:.1f} |" if b else "not run |"))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
