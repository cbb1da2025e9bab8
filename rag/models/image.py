"""The image model (CLIP for images and text-to-image queries), and how ingestion feeds it.

Backends (`RAG_IMAGE_BACKEND`): `clip-transformers` (default, `rag.models.clip`) or `clip`, the
stock `ClipEmbedding` of `llama-index-embeddings-clip` (needs the `clip` package and torchvision).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, NamedTuple, Optional, Sequence

from llama_index.core.base.embeddings.base import Embedding
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding

from rag.config import Settings
from rag.errors import ModelLoadError
from rag.models.clip import ClipTransformersEmbedding
from rag.models.hub import configure_threads, describe_load_failure, resolve_device
from rag.models.precision import resolve_precision


def load_image_embedding(settings: Settings) -> MultiModalEmbedding:
    """CLIP for images and text-to-image queries, by `settings.image_backend` (checked by Settings)."""
    if settings.image_backend == "clip":
        return _load_stock_clip(settings)
    device = resolve_device(settings.device)
    configure_threads(settings)
    return ClipTransformersEmbedding(
        model_name=settings.image_model,
        embed_batch_size=settings.image_batch_size,
        device=device,
        max_pixels=settings.max_image_pixels,
        precision=resolve_precision(settings.precision, device),
        text_graph=settings.text_graph == "on",
    )


def _load_stock_clip(settings: Settings) -> MultiModalEmbedding:
    """`RAG_IMAGE_BACKEND=clip`: llama-index-embeddings-clip's `ClipEmbedding`."""
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
        raise describe_load_failure("image", settings.image_model, "RAG_IMAGE_MODEL", exc) from exc


class ImageBatchPipeline(NamedTuple):
    """How ingestion feeds an image model, batch by batch.

    - `prepare`: run by the decoder threads on each decoded RGB image, ahead of the model
      (None: the decoded image itself is passed on).
    - `embed(prepared, paths)`: the vectors of one batch, in order; it gets both what
      `prepare` made and the files' paths (a model that reads files itself uses the paths).
    """

    prepare: Optional[Callable[[Any], Any]]
    embed: Callable[[Sequence[Any], Sequence[Path]], List[Embedding]]


def image_batch_pipeline(embedding: Any) -> ImageBatchPipeline:
    """The fastest way to feed `embedding` a batch of images, by what it can do.

    - Our `ClipTransformersEmbedding`: the decoder threads also resize and normalise to pixel
      tensors, so the main thread only runs the vision tower.
    - Any model with `embed_image_batch(images)` (decoded RGB images in, vectors out): it
      gets the decoded images.
    - Otherwise (the stock `ClipEmbedding`, any LlamaIndex `MultiModalEmbedding`): the file
      paths, through `get_image_embedding_batch`; it opens the files itself.
    """
    if isinstance(embedding, ClipTransformersEmbedding):
        return ImageBatchPipeline(embedding.preprocess, lambda pixels, paths: embedding.embed_pixel_batch(pixels))
    embed_images = getattr(embedding, "embed_image_batch", None)
    if callable(embed_images):
        return ImageBatchPipeline(None, lambda images, paths: embed_images(list(images)))
    return ImageBatchPipeline(None, lambda images, paths: embedding.get_image_embedding_batch([str(p) for p in paths]))
