"""Helpers shared by the speed benchmarks (bench/ingest.py, bench/query.py).

- `ensure_models`: random-weight stand-ins with the real architectures' shapes and FLOPs
  (BERT 384 x 12 layers like bge-small-en-v1.5, CLIP ViT-B/32), built once and cached.
- `make_corpus`: a seeded corpus of real photos (random crops, flips and resizes of the
  pictures that ship inside scikit-image, scikit-learn and matplotlib) and short passages.
- `run_child`: run one side of a comparison in a fresh interpreter and read back its JSON
  result and peak RSS.
- `machine`: CPU model, cores and memory, for the report.
"""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(os.environ.get("RAG_BENCH_CACHE", "/tmp/rag-bench"))

# Real photographs shipped in packages (scikit-image, scikit-learn, matplotlib).
PHOTO_NAMES = {
    "skimage": ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "horse.png",
                "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "motorcycle_right.png",
                "retina.jpg", "rocket.jpg", "brick.png", "grass.png", "gravel.png"],
    "sklearn": ["china.jpg", "flower.jpg"],
    "matplotlib": ["grace_hopper.jpg"],
}


def photo_paths() -> List[Path]:
    """Absolute paths of the real photos listed in PHOTO_NAMES (those that exist)."""
    import skimage
    import sklearn

    folders = {
        "skimage": Path(skimage.__file__).parent / "data",
        "sklearn": Path(sklearn.__file__).parent / "datasets" / "images",
    }
    try:  # not every environment has matplotlib; its one photo is optional
        import matplotlib

        folders["matplotlib"] = Path(matplotlib.get_data_path()) / "sample_data"
    except ImportError:
        pass
    paths = [folders[pkg] / name for pkg, names in PHOTO_NAMES.items() for name in names if pkg in folders]
    return [p for p in paths if p.is_file()]


# ------------------------------------------------------------------ models


# Bumped when the stand-ins change, so that a cache holding older ones is rebuilt.
# 2: tokenizers that cut English into real-length token sequences (version 1 cut CLIP text
#    into characters, which made its forward pass about three times longer than the real one's).
MODELS_VERSION = "2"


def ensure_models(cache: Path = DEFAULT_CACHE) -> Dict[str, Path]:
    """Random full-size BERT (bge-small shape) and CLIP ViT-B/32 folders, built once under cache."""
    root = Path(cache) / "models-full"
    done = root / ".complete"
    if not done.is_file() or done.read_text().strip() != MODELS_VERSION:
        from rag.testing.random_models import build_models

        build_models(root, "full")
        done.write_text(MODELS_VERSION + "\n")
    return {"text": root / "text", "image": root / "image"}


def resolve_models(text_model: Optional[str], image_model: Optional[str], cache: Path = DEFAULT_CACHE) -> Dict[str, Any]:
    """The models to benchmark: given ones, else the random full-size stand-ins."""
    random_ones = ensure_models(cache) if not (text_model and image_model) else {}
    text = text_model or str(random_ones["text"])
    image = image_model or str(random_ones["image"])
    note = []
    note.append(f"text: {text}" + (" (random weights, BERT 384x12 = bge-small-en-v1.5 shape)" if not text_model else ""))
    note.append(f"image: {image}" + (" (random weights, CLIP ViT-B/32 shape)" if not image_model else ""))
    return {"text": text, "image": image, "note": "; ".join(note), "random": not (text_model and image_model)}


# ------------------------------------------------------------------ corpus

# Words the random models' tokenizers know whole (rag.testing.random_models), so a passage of N words
# is about N tokens for them and for real English tokenizers alike.
def _words() -> List[str]:
    from rag.testing.random_models import _WORDS

    return list(_WORDS)


def make_passage(rng: random.Random, words: Sequence[str], low: int = 60, high: int = 200) -> str:
    """Sentences of 6-18 seeded words, `low`-`high` words in all."""
    target = rng.randint(low, high)
    sentences, count = [], 0
    while count < target:
        n = min(rng.randint(6, 18), target - count) if target - count >= 6 else target - count
        sentence = [rng.choice(words) for _ in range(n)]
        sentences.append(" ".join(sentence).capitalize() + ".")
        count += n
    return " ".join(sentences)


def make_image(rng: random.Random, source: Any) -> Any:
    """A random crop (50-100% per side), maybe mirrored, resized so its long side is 300-640 px."""
    from PIL import Image, ImageOps

    w, h = source.size
    cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    image = source.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    side = rng.randint(300, 640)
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def make_corpus(root: Path, images: int, passages: int, seed: int = 0) -> Dict[str, Any]:
    """Write `passages` .txt files (one passage each, `# Title` first line) and `images` photos.

    One passage per file, 60-200 words: both pipelines make exactly one chunk per file and
    neither truncates (BGE reads 512 tokens, the stock splitter cuts at 1024). 3 in 4 images
    are JPEG (quality 90), 1 in 4 PNG. Reuses the folder when the same spec was written there.
    """
    from PIL import Image

    root = Path(root)
    spec = {"images": images, "passages": passages, "seed": seed, "version": 1}
    stamp = root / "corpus.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("spec") == spec:
        return json.loads(stamp.read_text())
    if root.exists():
        import shutil

        shutil.rmtree(root)
    (root / "text").mkdir(parents=True)
    (root / "images").mkdir(parents=True)
    rng = random.Random(seed)
    words = _words()
    n_words = 0
    for i in range(passages):
        title = " ".join(rng.choice(words) for _ in range(2)).capitalize()
        body = make_passage(rng, words)
        n_words += len(body.split())
        (root / "text" / f"p{i:05d}.txt").write_text(f"# {title} {i}\n\n{body}\n", encoding="utf-8")
    sources = [Image.open(p).convert("RGB") for p in photo_paths()]
    sizes = []
    for i in range(images):
        image = make_image(rng, sources[i % len(sources)])
        sizes.append(max(image.size))
        if i % 4 == 3:
            image.save(root / "images" / f"i{i:05d}.png", optimize=False)
        else:
            image.save(root / "images" / f"i{i:05d}.jpg", quality=90)
    info = {
        "spec": spec,
        "passages": passages,
        "images": images,
        "mean_words": round(n_words / max(1, passages), 1),
        "image_long_side": [min(sizes, default=0), max(sizes, default=0)],
        "photo_sources": [p.name for p in photo_paths()],
    }
    stamp.write_text(json.dumps(info, indent=1))
    return info


# ------------------------------------------------------------------ processes


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def emit_result(data: Dict[str, Any]) -> None:
    """Print a child's result as the last line of stdout (with its peak RSS)."""
    data = {**data, "peak_rss_mb": round(peak_rss_mb(), 1)}
    sys.stdout.write("RESULT " + json.dumps(data) + "\n")
    sys.stdout.flush()


def cpu_busy_seconds() -> float:
    """CPU seconds all processes on this machine have spent busy since boot (from /proc/stat)."""
    try:
        fields = open("/proc/stat").readline().split()[1:]
    except OSError:
        return 0.0
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet(max_wait: float = 0.0, busy_below: float = 0.3, probe: float = 2.0) -> float:
    """Wait (up to max_wait s) until other processes use under `busy_below` of the CPUs; returns the last busy share."""
    deadline = time.monotonic() + max_wait
    while True:
        before = cpu_busy_seconds()
        time.sleep(probe)
        share = (cpu_busy_seconds() - before) / (probe * (os.cpu_count() or 1))
        if share < busy_below or time.monotonic() >= deadline:
            return share
        print(f"  machine busy ({share:.0%} of CPUs used by other processes), waiting ...", file=sys.stderr, flush=True)


def run_child(script: Path, args: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 3600) -> Dict[str, Any]:
    """Run `python script args...` in a fresh interpreter; return its RESULT json plus wall time.

    Also reports `other_cpu_s`: CPU seconds that other processes on this machine used while the
    child ran (contention: on 2 cores, any of it slows the child down).
    """
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    full_env.update(env or {})
    busy, child_cpu = cpu_busy_seconds(), children_cpu_seconds()
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script), *args], env=full_env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    child_cpu = children_cpu_seconds() - child_cpu
    other = max(0.0, cpu_busy_seconds() - busy - child_cpu)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["process_wall_s"] = round(wall, 2)
    result["process_cpu_s"] = round(child_cpu, 2)
    result["other_cpu_s"] = round(other, 2)
    return result


def machine() -> Dict[str, Any]:
    """CPU model, logical CPUs, memory and library versions, for the report header."""
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
        flags = next((line for line in out.splitlines() if line.startswith("Flags:")), "")
        bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        bf16 = False
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    from importlib import metadata

    versions = {}
    for name in ("torch", "transformers", "sentence-transformers", "llama-index-core", "llama-index-vector-stores-qdrant",
                 "qdrant-client", "qdrant-edge-py", "onnxruntime"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": model, "cpus": os.cpu_count(), "mem_gib": round(mem_gib, 1), "native_bf16": bf16,
            "python": platform.python_version(), "versions": versions}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


# ------------------------------------------------------------------ the stock CLIP embedding


def stock_clip_class() -> Any:
    """`llama_index.embeddings.clip.ClipEmbedding`, method for method, on transformers' CLIPModel.

    The stock class needs the `clip` package, which needs torchvision (not installable here).
    This stand-in keeps everything that decides its speed: one image or text per forward pass
    (`get_image_embedding_batch` loops over `_get_image_embedding`), `torch.no_grad` for
    images only, text padded to CLIP's full 77-token context as `clip.tokenize` does and run
    with gradients enabled, fp32, no normalisation, and `Image.open` + preprocessing of each
    file inside the loop. Only the model call differs: `CLIPModel.get_image_features` /
    `get_text_features` with the PIL image processor instead of `clip`'s `encode_image` /
    `encode_text` with torchvision transforms (same architecture and FLOPs).
    """
    from llama_index.core.base.embeddings.base import Embedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.constants import DEFAULT_EMBED_BATCH_SIZE
    from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
    from PIL import Image

    class StockClipEmbedding(MultiModalEmbedding):
        embed_batch_size: int = Field(default=DEFAULT_EMBED_BATCH_SIZE, gt=0)

        _model: Any = PrivateAttr()
        _preprocess: Any = PrivateAttr()
        _tokenize: Any = PrivateAttr()
        _device: Any = PrivateAttr()

        @classmethod
        def class_name(cls) -> str:
            return "ClipEmbedding"

        def __init__(self, *, embed_batch_size: int = DEFAULT_EMBED_BATCH_SIZE, model_name: str = "ViT-B/32", **kwargs: Any):
            import torch
            from transformers import AutoTokenizer, CLIPModel

            try:
                from transformers import CLIPImageProcessorPil as ImageProcessor
            except ImportError:
                from transformers import CLIPImageProcessor as ImageProcessor
            super().__init__(embed_batch_size=embed_batch_size, model_name=model_name, **kwargs)
            self._device = "cuda" if torch.cuda.is_available() else "cpu"
            # clip.load(): eval mode, fp32 on CPU.
            self._model = CLIPModel.from_pretrained(model_name).to(self._device).float().eval()
            processor = ImageProcessor.from_pretrained(model_name)
            tokenizer = AutoTokenizer.from_pretrained(model_name)
            self._preprocess = lambda image: processor(images=image, return_tensors="pt")["pixel_values"][0]

            def tokenize(text: str) -> Any:  # clip.tokenize: always 77 tokens, raises when longer
                out = tokenizer(text, padding="max_length", max_length=77, return_tensors="pt")
                if out["input_ids"].shape[1] > 77:
                    raise RuntimeError(f"Input {text} is too long for context length 77")
                return out

            self._tokenize = tokenize

        @staticmethod
        def _features(output: Any) -> Any:
            return output if hasattr(output, "norm") else output.pooler_output

        async def _aget_query_embedding(self, query: str) -> Embedding:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> Embedding:
            return self._get_text_embeddings([text])[0]

        def _get_text_embeddings(self, texts: List[str]) -> List[Embedding]:
            results = []
            for text in texts:  # one forward pass per text, gradients on (as in the stock class)
                tokens = self._tokenize(text).to(self._device)
                text_embedding = self._features(self._model.get_text_features(**tokens))
                results.append(text_embedding.tolist()[0])
            return results

        def _get_query_embedding(self, query: str) -> Embedding:
            return self._get_text_embedding(query)

        async def _aget_image_embedding(self, img_file_path: Any) -> Embedding:
            return self._get_image_embedding(img_file_path)

        def _get_image_embedding(self, img_file_path: Any) -> Embedding:
            import torch

            with torch.no_grad():
                image = self._preprocess(Image.open(img_file_path)).unsqueeze(0).to(self._device)
                return self._features(self._model.get_image_features(pixel_values=image)).tolist()[0]

    return StockClipEmbedding


def settings_with(settings: Any, **extra: Any) -> Any:
    """Settings with some fields overridden (every field is declared in rag.config)."""
    return settings.with_overrides(**extra)
