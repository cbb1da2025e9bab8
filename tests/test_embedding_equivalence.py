"""Our embedders, in every precision that can be the default, match the reference fp32 forward pass.

The reference is the model run by hand with transformers in fp32 (mean pooling for a plain
BERT folder, as sentence-transformers does; CLIP's image and text towers), L2-normalised.
Tolerances are `rag.models.precision.PRECISION_MIN_COSINE`: fp32 >= 0.99999, bf16 >= 0.999.
int8 is opt-in only: it never comes out of `auto`, and asking for it warns and says what it
trades. No timing is asserted here (bench/ingest.py measures speed).
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from rag.config import Settings
from rag.models import precision as emb
from rag.models.batching import prefetch
from rag.models.clip import ClipTransformersEmbedding
from rag.models.image import load_image_embedding
from rag.models.precision import PRECISION_MIN_COSINE, precision_label, resolve_precision
from rag.models.text import load_text_embedding
from rag.errors import ModelLoadError

from conftest import photo, run_python

PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "moon.png", "horse.png", "camera.png"]
TEXTS = [
    "the cat was on the moon",
    "a rocket and a horse in space with the astronaut",
    "what is the hubble galaxy",
    "coffee",
    "grace hopper was a compiler star and the photo of a red car is on the earth " * 3,
]
REAL_TEXTS = [
    "The Moon is Earth's only natural satellite.",
    "A cup of coffee is brewed from roasted beans and hot water.",
    "The domestic cat is a small carnivorous mammal that purrs.",
    "Rockets carry astronauts and satellites into orbit around the Earth.",
    "Vincent van Gogh painted The Starry Night in 1889 while staying at an asylum in Saint-Remy.",
]
DEFAULTABLE = ["fp32", "bf16"]  # what `auto` can resolve to


def with_precision(settings: Settings, precision: str) -> Settings:
    """Settings with `precision` (a field the config may not have yet; read with getattr)."""
    if "precision" in {f.name for f in dataclasses.fields(settings)}:
        return dataclasses.replace(settings, precision=precision)
    object.__setattr__(settings, "precision", precision)
    return settings


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def reference_text_vectors(folder, texts) -> np.ndarray:
    """fp32 BERT forward pass, mean pooling over real tokens, L2-normalised."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    inputs = tokenizer(list(texts), padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def reference_clip(folder):
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

    return (CLIPModel.from_pretrained(folder).eval(), CLIPImageProcessorPil.from_pretrained(folder),
            AutoTokenizer.from_pretrained(folder))


def features(output):
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def reference_image_vectors(folder, paths) -> np.ndarray:
    model, processor, _ = reference_clip(folder)
    images = [Image.open(p).convert("RGB") for p in paths]
    with torch.no_grad():
        out = features(model.get_image_features(pixel_values=processor(images=images, return_tensors="pt")["pixel_values"]))
    return torch.nn.functional.normalize(out, dim=-1).numpy()


def reference_clip_text_vectors(folder, texts) -> np.ndarray:
    model, _, tokenizer = reference_clip(folder)
    inputs = tokenizer(list(texts), padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        out = features(model.get_text_features(**inputs))
    return torch.nn.functional.normalize(out, dim=-1).numpy()


@pytest.fixture(scope="module")
def text_models(tiny_models):
    return {p: load_text_embedding(with_precision(Settings(text_model=str(tiny_models["text"])), p)) for p in DEFAULTABLE}


@pytest.fixture(scope="module")
def clip_models(tiny_models):
    return {p: load_image_embedding(with_precision(Settings(image_model=str(tiny_models["image"]), image_batch_size=3), p))
            for p in DEFAULTABLE}


# ----------------------------------------------------------------- tolerances


@pytest.mark.parametrize("precision", DEFAULTABLE)
def test_text_passages_match_the_fp32_reference(precision, text_models, tiny_models):
    ours = text_models[precision].get_text_embedding_batch(TEXTS)
    reference = reference_text_vectors(str(tiny_models["text"]), TEXTS)
    assert cosines(ours, reference).min() >= PRECISION_MIN_COSINE[precision]
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-3)


@pytest.mark.parametrize("precision", DEFAULTABLE)
def test_text_queries_match_the_fp32_reference_with_the_instruction(precision, tiny_models):
    instruction = "the query: "
    settings = with_precision(Settings(text_model=str(tiny_models["text"]), text_query_instruction=instruction), precision)
    model = load_text_embedding(settings)
    ours = [model.get_query_embedding(t) for t in TEXTS]
    reference = reference_text_vectors(str(tiny_models["text"]), [instruction + t for t in TEXTS])
    assert cosines(ours, reference).min() >= PRECISION_MIN_COSINE[precision]


@pytest.mark.parametrize("precision", DEFAULTABLE)
def test_real_minilm_matches_the_fp32_reference(precision, minilm_dir):
    """The real all-MiniLM-L6-v2 (sentence-transformers folder, mean pooling) on real sentences."""
    model = load_text_embedding(with_precision(Settings(text_model=str(minilm_dir)), precision))
    ours = model.get_text_embedding_batch(REAL_TEXTS)
    reference = reference_text_vectors(str(minilm_dir), REAL_TEXTS)
    assert cosines(ours, reference).min() >= PRECISION_MIN_COSINE[precision]


@pytest.mark.parametrize("precision", DEFAULTABLE)
def test_clip_images_match_the_fp32_reference(precision, clip_models, tiny_models):
    paths = [photo(name) for name in PHOTOS]
    ours = clip_models[precision].get_image_embedding_batch([str(p) for p in paths])
    reference = reference_image_vectors(str(tiny_models["image"]), paths)
    assert cosines(ours, reference).min() >= PRECISION_MIN_COSINE[precision]
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("precision", DEFAULTABLE)
def test_clip_text_matches_the_fp32_reference(precision, clip_models, tiny_models):
    ours = [clip_models[precision].get_query_embedding(t) for t in TEXTS]
    reference = reference_clip_text_vectors(str(tiny_models["image"]), TEXTS)
    assert cosines(ours, reference).min() >= PRECISION_MIN_COSINE[precision]


def test_bf16_weights_cast_once_give_the_same_vectors_as_plain_autocast(clip_models, tiny_models):
    """bf16 stores Linear weights in bf16 once; autocast over fp32 weights makes the very same cast."""
    ours = clip_models["bf16"]
    linear = [m for m in ours._model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and all(m.weight.dtype == torch.bfloat16 for m in linear)
    model, processor, _ = reference_clip(str(tiny_models["image"]))
    images = [Image.open(photo(n)).convert("RGB") for n in PHOTOS[:3]]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = torch.nn.functional.normalize(features(model.get_image_features(pixel_values=pixels)).float(), dim=-1)
    assert np.allclose(ours.embed_pixel_batch(pixels), autocast.numpy(), atol=1e-6)


def test_worker_preprocessing_gives_the_same_vectors_as_batch_preprocessing(clip_models):
    """The ingest fast path (preprocess one image per worker, stack, embed) changes nothing."""
    model = clip_models["fp32"]
    images = [Image.open(photo(n)).convert("RGB") for n in PHOTOS]
    stacked = model.embed_pixel_batch([model.preprocess(image) for image in images])
    assert np.array_equal(np.asarray(stacked), np.asarray(model.embed_image_batch(images)))


# ----------------------------------------------------------------- which precision, and labels


def test_auto_is_bf16_only_where_the_cpu_has_native_bf16(monkeypatch):
    monkeypatch.setattr(emb, "native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("auto", "cuda") == "fp32"
    monkeypatch.setattr(emb, "native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("AUTO", "cpu") == "fp32"
    for explicit in ("fp32", "bf16", "int8"):
        assert resolve_precision(explicit, "cpu") == explicit


def test_auto_never_picks_int8(monkeypatch):
    for native in (True, False):
        monkeypatch.setattr(emb, "native_bf16", lambda: native)
        assert resolve_precision("auto", "cpu") in DEFAULTABLE


def test_unknown_precision_is_named():
    with pytest.raises(ModelLoadError, match=r"unknown RAG_PRECISION 'fp8': expected one of auto, fp32, bf16, int8"):
        resolve_precision("fp8", "cpu")


def test_int8_is_cpu_only():
    with pytest.raises(ModelLoadError, match="runs on the CPU only"):
        resolve_precision("int8", "cuda")


def test_int8_is_opt_in_and_labelled(tiny_models):
    settings = with_precision(Settings(text_model=str(tiny_models["text"]), image_model=str(tiny_models["image"])), "int8")
    with pytest.warns(UserWarning, match=r"precision int8 .*opt-in.*0\.95 cosine"):
        text = load_text_embedding(settings)
    with pytest.warns(UserWarning, match=r"precision int8"):
        image = load_image_embedding(settings)
    assert text.precision == "int8" and image.precision == "int8"
    assert "int8" in precision_label("int8") and "opt-in" in precision_label("int8")
    assert PRECISION_MIN_COSINE["int8"] is None  # no accuracy promise
    # It still embeds (unit vectors of the right size), just not within the bf16 tolerance promise.
    vector = text.get_text_embedding("the cat")
    assert len(vector) == 32 and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-3)
    assert len(image.get_image_embedding(str(photo("chelsea.png")))) == 16


def test_class_default_is_fp32_and_settings_default_is_auto(tiny_models, monkeypatch):
    direct = ClipTransformersEmbedding(model_name=str(tiny_models["image"]))
    assert direct.precision == "fp32"
    monkeypatch.setattr(emb, "native_bf16", lambda: False)
    assert load_image_embedding(Settings(image_model=str(tiny_models["image"]))).precision == "fp32"


# ----------------------------------------------------------------- the bounded prefetch


def test_prefetch_keeps_order_and_a_bounded_window():
    in_flight, peak, lock = [0], [0], threading.Lock()

    def work(i):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.002)
        return i * i

    out = []
    for value in prefetch(work, range(40), workers=2, ahead=4):
        out.append(value)
        with lock:
            in_flight[0] -= 1  # consumed
    assert out == [i * i for i in range(40)]
    assert peak[0] <= 5  # the window (4) plus the one being handed over


def test_prefetch_passes_errors_through_in_order():
    def work(i):
        if i == 3:
            raise ValueError("bad item 3")
        return i

    seen = []
    with pytest.raises(ValueError, match="bad item 3"):
        for value in prefetch(work, range(10), workers=2, ahead=3):
            seen.append(value)
    assert seen == [0, 1, 2]


# ----------------------------------------------------------------- cold start: nothing heavy before it is needed


def test_opening_and_counting_an_index_imports_no_model_library(tmp_path):
    """`rag info`, and `rag search` up to the first query, must not pay for torch/transformers imports."""
    code = (
        "import sys\n"
        "from rag.config import Settings\n"
        "from rag.index.core import open_index\n"
        "import rag.models.embeddings, rag.index.ingest, rag.search.retriever\n"
        f"index = open_index(Settings(storage={str(tmp_path / 'storage')!r}))\n"
        "index.counts(); index.close()\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'llama_index.embeddings.huggingface')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    assert run_python(code) == ""


def test_a_passages_only_search_does_not_load_clip(settings, shared_embeddings, corpus):
    from rag.index.core import RagIndex
    from rag.index.ingest import ingest
    from rag.search.retriever import Retriever

    with RagIndex(settings, text_embedding=shared_embeddings["text"], image_embedding=shared_embeddings["image"]) as index:
        ingest(index, [corpus], progress=False)
    with RagIndex(settings, text_embedding=shared_embeddings["text"]) as index:
        hits = Retriever(index).search("the cat", image_top_k=0)
        assert hits and all(h.modality == "text" for h in hits)
        assert index._image_embedding is None
