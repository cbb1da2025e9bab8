"""Embedding models: the only module that imports torch and transformers.

- Text: BGE through `llama-index-embeddings-huggingface` (sentence-transformers), with BGE's
  query instruction on queries.
- Images (and text-to-image queries): CLIP through transformers' `CLIPModel`, as a LlamaIndex
  `MultiModalEmbedding` that batches, runs under `torch.inference_mode()`, L2-normalises and
  truncates text at CLIP's 77 tokens. The stock `ClipEmbedding` stays selectable
  (`RAG_IMAGE_BACKEND=clip`), but needs the `clip` package and torchvision.

Model names accept a hub id or a local directory; the device is CUDA when present.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Union

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from PIL import Image

from rag.config import BGE_QUERY_INSTRUCTION, Settings
from rag.corpus.images import DEFAULT_MAX_PIXELS, open_image
from rag.errors import ModelLoadError

logger = logging.getLogger(__name__)

CLIP_MAX_TOKENS = 77
ImageInput = Union[str, Path, Image.Image]


def quiet_model_loading() -> None:
    """Silence per-load progress bars and deprecation chatter from transformers."""
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)


_HUB_CHECKED = False


def prefer_local_files(name: str, host: str = "huggingface.co", timeout: float = 3.0) -> None:
    """For a hub id with no route to the hub, switch the hub client to offline mode.

    Cached models still load; missing ones fail in seconds instead of after minutes of retries.
    """
    global _HUB_CHECKED
    if _HUB_CHECKED or Path(name).exists() or os.environ.get("HF_HUB_OFFLINE"):
        return
    import socket

    _HUB_CHECKED = True
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        logger.info("%s is unreachable: loading models from local files only", host)
        import huggingface_hub.constants

        os.environ["HF_HUB_OFFLINE"] = "1"
        huggingface_hub.constants.HF_HUB_OFFLINE = True  # read once at import time


def resolve_device(device: str = "auto") -> str:
    """`auto` -> `cuda` when a GPU is visible, else `cpu`; anything else passes through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _describe_load_failure(kind: str, name: str, env: str, exc: Exception) -> ModelLoadError:
    if Path(name).exists():
        reason = f"the folder exists but does not hold a usable model ({type(exc).__name__}: {exc})"
    else:
        reason = (
            "it is not a local folder and could not be fetched from the Hugging Face hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        )
    return ModelLoadError(
        f"cannot load the {kind} model {name!r}: {reason}. "
        f"Set {env} to a local model folder, or make the hub reachable."
    )


def query_instruction_for(model_name: str, configured: Optional[str]) -> str:
    """The instruction prepended to text queries: configured, else BGE's for BGE models."""
    if configured is not None:
        return configured
    return BGE_QUERY_INSTRUCTION if "bge" in Path(model_name).name.lower() else ""


def load_text_embedding(settings: Settings) -> BaseEmbedding:
    """BGE (or any sentence-transformers model) as a LlamaIndex embedding."""
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    name = settings.text_model
    quiet_model_loading()
    prefer_local_files(name)
    try:
        return HuggingFaceEmbedding(
            model_name=name,
            query_instruction=query_instruction_for(name, settings.text_query_instruction) or None,
            # An explicit empty string keeps LlamaIndex from guessing one from the name.
            text_instruction="",
            normalize=True,
            embed_batch_size=settings.text_batch_size,
            device=resolve_device(settings.device),
            max_length=512,
        )
    except Exception as exc:  # any loader failure becomes one clear message
        raise _describe_load_failure("text", name, "RAG_TEXT_MODEL", exc) from exc


def load_text_tokenizer(settings: Settings) -> Any:
    """The text model's own tokenizer, used to size chunks in its tokens."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(settings.text_model)
    except Exception as exc:
        raise _describe_load_failure("text", settings.text_model, "RAG_TEXT_MODEL", exc) from exc


def _batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ClipTransformersEmbedding(MultiModalEmbedding):
    """CLIP from transformers: batched, no-grad, normalised, truncating; no torchvision needed."""

    model_name: str = Field(default="openai/clip-vit-base-patch32")
    embed_batch_size: int = Field(default=16, gt=0)
    device: str = Field(default="cpu")
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS)
    decode_workers: int = Field(default=2, ge=1)

    _model: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()
    _processor: Any = PrivateAttr()

    def __init__(self, model_name: str = "openai/clip-vit-base-patch32", **kwargs: Any) -> None:
        super().__init__(model_name=model_name, **kwargs)
        from transformers import AutoTokenizer, CLIPModel

        try:
            from transformers import CLIPImageProcessorPil as ImageProcessor
        except ImportError:  # transformers < 5 names the PIL processor CLIPImageProcessor
            from transformers import CLIPImageProcessor as ImageProcessor
        quiet_model_loading()
        prefer_local_files(model_name)
        try:
            self._model = CLIPModel.from_pretrained(model_name).to(self.device).eval()
            self._tokenizer = AutoTokenizer.from_pretrained(model_name)
            self._processor = ImageProcessor.from_pretrained(model_name)
        except Exception as exc:
            raise _describe_load_failure("image", model_name, "RAG_IMAGE_MODEL", exc) from exc

    @classmethod
    def class_name(cls) -> str:
        return "ClipTransformersEmbedding"

    @property
    def dimension(self) -> int:
        return int(self._model.config.projection_dim)

    # -- pure tensor steps -------------------------------------------------------------
    @staticmethod
    def _features(output: Any) -> Any:
        # transformers >= 5 returns a model output whose pooler_output holds the projection.
        return output if hasattr(output, "norm") else output.pooler_output

    @staticmethod
    def _normalise(features: Any) -> List[Embedding]:
        import torch

        features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().tolist()

    def embed_text_batch(self, texts: Sequence[str]) -> List[Embedding]:
        """One forward pass of CLIP's text tower over the batch (texts cut at 77 tokens)."""
        import torch

        inputs = self._tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=CLIP_MAX_TOKENS,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            features = self._features(self._model.get_text_features(**inputs))
        return self._normalise(features)

    def embed_image_batch(self, images: Sequence[Image.Image]) -> List[Embedding]:
        """One forward pass of CLIP's vision tower over already decoded RGB images."""
        import torch

        pixels = self._processor(images=list(images), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            features = self._features(self._model.get_image_features(pixel_values=pixels.to(self.device)))
        return self._normalise(features)

    def _to_image(self, item: Any) -> Image.Image:
        if isinstance(item, Image.Image):
            return item if item.mode == "RGB" else item.convert("RGB")
        if hasattr(item, "read"):  # BytesIO, as LlamaIndex's ImageType allows
            from rag.corpus.images import normalise

            return normalise(Image.open(item))
        return open_image(item, self.max_pixels)

    def iter_image_embeddings(self, items: Iterable[ImageInput]) -> Iterator[Embedding]:
        """Embed images in batches; decoding of the next batch overlaps the current forward pass."""
        items = list(items)
        with ThreadPoolExecutor(max_workers=self.decode_workers) as pool:
            decoded = pool.map(self._to_image, items)
            batch: List[Image.Image] = []
            for image in decoded:
                batch.append(image)
                if len(batch) == self.embed_batch_size:
                    yield from self.embed_image_batch(batch)
                    batch = []
            if batch:
                yield from self.embed_image_batch(batch)

    # -- LlamaIndex interface ----------------------------------------------------------
    def _get_text_embeddings(self, texts: List[str]) -> List[Embedding]:
        out: List[Embedding] = []
        for batch in _batched(texts, self.embed_batch_size):
            out.extend(self.embed_text_batch(batch))
        return out

    def _get_text_embedding(self, text: str) -> Embedding:
        return self.embed_text_batch([text])[0]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self.embed_text_batch([query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    def _get_image_embedding(self, img_file_path: Any) -> Embedding:
        return self.embed_image_batch([self._to_image(img_file_path)])[0]

    async def _aget_image_embedding(self, img_file_path: Any) -> Embedding:
        return self._get_image_embedding(img_file_path)

    def _get_image_embeddings(self, img_file_paths: List[Any]) -> List[Embedding]:
        return list(self.iter_image_embeddings(img_file_paths))

    def get_image_embedding_batch(self, img_file_paths: List[Any], show_progress: bool = False) -> List[Embedding]:
        """All images at once through the overlapping pipeline (LlamaIndex calls this)."""
        return list(self.iter_image_embeddings(img_file_paths))


def load_image_embedding(settings: Settings) -> MultiModalEmbedding:
    """CLIP for images and text-to-image queries, by `settings.image_backend`."""
    backend = settings.image_backend
    if backend == "clip-transformers":
        return ClipTransformersEmbedding(
            model_name=settings.image_model,
            embed_batch_size=settings.image_batch_size,
            device=resolve_device(settings.device),
            max_pixels=settings.max_image_pixels,
        )
    if backend == "clip":
        try:
            from llama_index.embeddings.clip import ClipEmbedding
        except ImportError as exc:
            raise ModelLoadError(
                "RAG_IMAGE_BACKEND=clip needs the stock CLIP integration: pip install 'rag[clip]' "
                "(it also needs the `clip` package and torchvision)"
            ) from exc
        try:
            return ClipEmbedding(model_name=settings.image_model, embed_batch_size=settings.image_batch_size)
        except ImportError as exc:
            raise ModelLoadError(f"RAG_IMAGE_BACKEND=clip: {exc}") from exc
        except ValueError as exc:
            raise _describe_load_failure("image", settings.image_model, "RAG_IMAGE_MODEL", exc) from exc
    raise ModelLoadError(
        f"unknown RAG_IMAGE_BACKEND {backend!r}: expected 'clip-transformers' (default) or 'clip'"
    )


def embedding_dimension(model: BaseEmbedding) -> int:
    """Vector size of an embedding model (asks it once for an embedding if it cannot say)."""
    dim = getattr(model, "dimension", None)
    if isinstance(dim, int):
        return dim
    inner = getattr(model, "_model", None)
    for method in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        if inner is not None and hasattr(inner, method):
            return int(getattr(inner, method)())
    return len(model.get_text_embedding("dimension probe"))


def configure_torch_threads() -> None:
    """Use every core for intra-op work unless the user set OMP/torch threads."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
