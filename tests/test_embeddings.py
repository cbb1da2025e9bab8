"""The embedders: CLIP batches, normalises, truncates and matches the plain forward pass."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from rag.config import BGE_QUERY_INSTRUCTION, Settings
from rag.models.clip import ClipTransformersEmbedding
from rag.media.images import open_image
from rag.models.image import image_batch_pipeline, load_image_embedding
from rag.models.text import load_text_embedding, query_instruction_for
from rag.errors import ModelLoadError

from conftest import photo

PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "moon.png"]


@pytest.fixture(scope="module")
def clip(tiny_models):
    return ClipTransformersEmbedding(model_name=str(tiny_models["image"]), embed_batch_size=2)


def reference_image_vectors(folder, paths):
    """CLIP's forward pass done by hand, the way the transformers docs show it."""
    from transformers import CLIPImageProcessorPil, CLIPModel

    model = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPImageProcessorPil.from_pretrained(folder)
    images = [Image.open(p).convert("RGB") for p in paths]
    with torch.no_grad():
        out = model.get_image_features(pixel_values=processor(images=images, return_tensors="pt")["pixel_values"])
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(out, dim=-1).numpy()


def test_image_vectors_match_the_reference_forward_pass(clip, tiny_models):
    paths = [photo(name) for name in PHOTOS]
    ours = np.array(clip.get_image_embedding_batch([str(p) for p in paths]))
    reference = reference_image_vectors(str(tiny_models["image"]), paths)
    cosines = (ours * reference).sum(axis=1)
    assert cosines.min() > 0.99999
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_one_forward_pass_per_batch_under_inference_mode(clip):
    calls = []
    original = clip._model.get_image_features

    def counting(*args, **kwargs):
        calls.append((kwargs["pixel_values"].shape[0], torch.is_inference_mode_enabled()))
        return original(*args, **kwargs)

    clip._model.get_image_features = counting
    try:
        vectors = clip.get_image_embedding_batch([str(photo(n)) for n in PHOTOS])
    finally:
        clip._model.get_image_features = original
    assert len(vectors) == 5
    assert calls == [(2, True), (2, True), (1, True)]


def test_long_text_is_truncated_at_77_tokens_not_rejected(clip):
    long_text = "a photo of a cat " * 100
    vector = clip.get_text_embedding(long_text)
    ids = clip._tokenizer(long_text, truncation=True, max_length=77)["input_ids"]
    assert len(ids) == 77
    cut = clip._tokenizer.decode(ids[1:-1])
    assert np.dot(vector, clip.get_text_embedding(cut)) == pytest.approx(1.0, abs=1e-4)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_text_batch_is_one_forward_pass(clip):
    calls = []
    original = clip._text_forward  # the text tower's forward pass, eager or traced (rag.models.graph)
    clip._text_forward = lambda inputs: calls.append(inputs["input_ids"].shape[0]) or original(inputs)
    try:
        vectors = clip.get_text_embedding_batch(["a cat", "a rocket on a launch pad"])
    finally:
        clip._text_forward = original
    assert calls == [2] and len(vectors) == 2


def test_bge_instruction_only_for_bge_models():
    assert query_instruction_for("BAAI/bge-small-en-v1.5", None) == BGE_QUERY_INSTRUCTION
    assert query_instruction_for("/models/bge-small-en-v1.5", None) == BGE_QUERY_INSTRUCTION
    assert query_instruction_for("/models/all-MiniLM-L6-v2", None) == ""
    assert query_instruction_for("BAAI/bge-small-en-v1.5", "Query: ") == "Query: "


def test_text_model_loads_from_a_local_folder(tiny_models):
    model = load_text_embedding(Settings(text_model=str(tiny_models["text"])))
    vector = model.get_query_embedding("where is the moon")
    assert len(vector) == 32 and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_missing_model_folder_gives_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError) as info:
        load_image_embedding(Settings(image_model=str(missing)))
    message = str(info.value)
    assert message.startswith(f"cannot load the image model '{missing}': it is not a local folder")
    assert message.endswith("Set RAG_IMAGE_MODEL to a local model folder, or make the hub reachable.")


def test_stock_clip_backend_goes_through_the_same_factory(monkeypatch):
    """The stock ClipEmbedding needs `clip` (and torchvision); a stand-in module shows the wiring."""
    loaded = {}

    class FakeModel:
        def encode_image(self, batch):
            return torch.ones(batch.shape[0], 4)

        def encode_text(self, tokens):
            return torch.full((tokens.shape[0], 4), 2.0)

    def load(name, device="cpu"):
        loaded["name"] = name
        return FakeModel(), lambda image: torch.zeros(3, 8, 8)

    fake_clip = types.SimpleNamespace(load=load, tokenize=lambda text: torch.zeros(1, 77, dtype=torch.long))
    monkeypatch.setitem(sys.modules, "clip", fake_clip)
    model = load_image_embedding(Settings(image_backend="clip", image_model="ViT-B/32"))
    assert type(model).__name__ == "ClipEmbedding"
    assert loaded["name"] == "ViT-B/32"
    assert model.get_image_embedding(str(photo("chelsea.png"))) == [1.0, 1.0, 1.0, 1.0]
    assert model.get_text_embedding("a cat") == [2.0, 2.0, 2.0, 2.0]


def test_stock_clip_backend_without_clip_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "clip", None)
    with pytest.raises(ModelLoadError, match=r"RAG_IMAGE_BACKEND=clip: ClipEmbedding requires"):
        load_image_embedding(Settings(image_backend="clip"))


def test_image_batch_pipeline_feeds_each_kind_of_model(shared_embeddings):
    paths = [photo(name) for name in PHOTOS[:2]]
    images = [open_image(p) for p in paths]

    clip = shared_embeddings["image"]  # ours: pixel tensors made in the decoder threads
    ours = image_batch_pipeline(clip)
    assert ours.prepare == clip.preprocess
    assert np.allclose(ours.embed([ours.prepare(i) for i in images], paths), clip.embed_image_batch(images), atol=1e-6)

    class Decoded:  # any model with embed_image_batch gets the decoded images
        seen: list = []

        def embed_image_batch(self, batch):
            self.seen.append(batch)
            return [[float(len(batch))]] * len(batch)

    decoded = image_batch_pipeline(Decoded())
    assert decoded.prepare is None and decoded.embed(images, paths) == [[2.0], [2.0]]
    assert Decoded.seen == [images]

    class Stock:  # the stock backend opens the files itself
        files: list = []

        def get_image_embedding_batch(self, files):
            self.files.append(files)
            return [[1.0]] * len(files)

    stock = image_batch_pipeline(Stock())
    assert stock.prepare is None and stock.embed(images, paths) == [[1.0], [1.0]]
    assert Stock.files == [[str(p) for p in paths]]
