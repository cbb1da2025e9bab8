"""`rag serve` under load, and a search through a running server against the cold embedded path.

    python bench/server.py                          # 100,000 points per collection, 8 clients
    python bench/server.py --n 10000 --requests 200 # quicker

Side by side in one run, over one index (N synthetic points per collection, as bench/query.py
makes them: seeded random unit vectors, payloads shaped like `rag ingest`'s, HNSW built):

1. cold embedded: `rag search QUERY --json` in a fresh process (imports, model loading, store
   opening, one search), no server running: what every CLI search costs today;
2. `rag serve` in its own process: time until it answers;
3. warm `GET /api/search?q=...&top_k=5&image_top_k=3` from C concurrent clients (one HTTP
   connection each, distinct 5-10 word queries): latency p50/p95 and throughput, and the same
   with one client; then all of it again with `RAG_QUERY_BATCH=1` (each query its own forward
   pass), the baseline for the query batcher;
4. a search through the running server from a fresh process: `open_service().search(...)` in
   Python (interpreter start, `import rag.service`, httpx, one request, printing), and the
   `rag search QUERY` command itself (its imports, finding the server, one request, the table).

Models: the given ones, else random-weight full-size stand-ins (BERT 384x12 = bge-small
shape, CLIP ViT-B/32): same compute as the real ones.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import DEFAULT_CACHE, REPO, machine, percentile, resolve_models  # noqa: E402

THROUGH_SERVER = (
    "import json, sys\n"
    "from rag.service import open_service\n"
    "svc = open_service()\n"
    "print(json.dumps(svc.search(sys.argv[1], top_k=5, image_top_k=3).to_dict())[:200])\n"
    "print(type(svc).__name__)\n"
)


def query_texts(n: int, seed: int) -> List[str]:
    from common import _words

    rng = random.Random(seed)
    words = _words()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 10))) for _ in range(n)]


def build_index(args: argparse.Namespace) -> Dict[str, Any]:
    """The index (built once, cached under --cache)."""
    import query  # bench/query.py: the same synthetic points

    storage = Path(args.storage)
    marker = storage / ".bench-complete"
    if marker.is_file() and (storage / "signals").is_dir():
        return json.loads(marker.read_text())
    shutil.rmtree(storage, ignore_errors=True)  # absent, or built before the lexical and caption signals
    storage.mkdir(parents=True)
    fill_args = argparse.Namespace(text_model=args.text_model, image_model=args.image_model, storage=str(storage),
                                   n=args.n, seed=0, query_instruction=None, precision=None)
    result = query.fill_ours(fill_args)
    marker.write_text(json.dumps(result))
    return result


def env_for(args: argparse.Namespace) -> Dict[str, str]:
    return {**os.environ, "RAG_STORAGE": str(args.storage), "RAG_TEXT_MODEL": args.text_model,
            "RAG_IMAGE_MODEL": args.image_model, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}


def timed_process(cmd: List[str], env: Dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed:\n{done.stderr[-2000:]}")
    return seconds


def load(url: str, clients: int, requests: int, queries: List[str]) -> Dict[str, Any]:
    """`requests` searches spread over `clients` threads, each with its own connection."""
    import httpx

    latencies: List[float] = []
    errors: List[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as http:
            while True:
                with lock:
                    k = next(counter, None)
                if k is None:
                    return
                started = time.perf_counter()
                r = http.get("/api/search", params={"q": queries[k % len(queries)], "top_k": 5, "image_top_k": 3})
                elapsed = time.perf_counter() - started
                with lock:
                    if r.status_code == 200 and len(r.json()["hits"]) == 8:
                        latencies.append(elapsed)
                    else:
                        errors.append(f"{r.status_code} {r.text[:200]}")

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"clients": clients, "requests": requests, "ok": len(latencies), "errors": errors[:3],
            "p50_ms": round(percentile(latencies, 50) * 1000, 1), "p95_ms": round(percentile(latencies, 95) * 1000, 1),
            "per_s": round(len(latencies) / wall, 1)}


def serve_and_load(args: argparse.Namespace, env: Dict[str, str], queries: List[str], through: bool) -> Dict[str, Any]:
    """Start `rag serve` with `env`, time its start, load it with C clients then 1, stop it."""
    from rag.client import running_server
    import httpx

    report: Dict[str, Any] = {"query_batch": env.get("RAG_QUERY_BATCH", "default")}
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--port", "0", "--log-level", "warning"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        advert = None
        while advert is None:
            if server.poll() is not None:
                raise SystemExit(f"rag serve failed:\n{server.stderr.read()[-2000:]}")
            time.sleep(0.05)
            advert = running_server(args.storage)
        while True:
            try:
                if httpx.get(advert["url"] + "/api/info", trust_env=False, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        report["server_start_s"] = round(time.perf_counter() - started, 2)
        load(advert["url"], args.clients, 4 * args.clients, queries[-50:])  # warm-up
        report["warm"] = load(advert["url"], args.clients, args.requests, queries)
        report["warm_1_client"] = load(advert["url"], 1, max(50, args.requests // 4), queries)
        if through:
            for name, cmd in (("through_server_s", [sys.executable, "-c", THROUGH_SERVER]),
                              ("rag_search_through_server_s", [sys.executable, "-m", "rag.cli", "search"])):
                runs = [timed_process(cmd + [q], env) for q in queries[:args.runs]]
                report[name] = {"median": round(statistics.median(runs), 3), "runs": [round(t, 3) for t in runs]}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="points per collection")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3, help="fresh-process runs of each CLI path")
    parser.add_argument("--text-model")
    parser.add_argument("--image-model")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    models = resolve_models(args.text_model, args.image_model, args.cache)
    args.text_model, args.image_model = models["text"], models["image"]
    args.storage = args.cache / f"server-{args.n}"
    report: Dict[str, Any] = {"machine": machine(), "models": models["note"], "n": args.n,
                              "load_before": os.getloadavg()}
    report["index"] = build_index(args)
    env = env_for(args)
    queries = query_texts(args.requests + 50, seed=1)

    cold = [timed_process([sys.executable, "-m", "rag.cli", "search", q, "--json"], env) for q in queries[:args.runs]]
    report["cold_embedded_s"] = {"median": round(statistics.median(cold), 2), "runs": [round(c, 2) for c in cold]}

    report["batched"] = serve_and_load(args, env, queries, through=True)
    # the same load with the query batcher off: one forward pass per query
    report["one_query_per_pass"] = serve_and_load(args, {**env, "RAG_QUERY_BATCH": "1"}, queries, through=False)
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
