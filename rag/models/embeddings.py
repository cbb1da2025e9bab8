"""The embedding models' public names in one place (a re-export of the `rag.models` modules).

- `precision`: fp32 / bf16 autocast / int8 dynamic quantization, and `auto`.
- `hub`: device, threads, offline hub fallback, one clear load error.
- `text`: BGE (sentence-transformers) as a LlamaIndex embedding.
- `clip`: CLIP through transformers (batched, no-grad, normalised, truncating).
- `image`: the image backend factory and how ingestion feeds an image model.
- `batching`: fixed-size slices and a bounded thread-pool map.
- `graph`: the text encoders' forward pass as a traced TorchScript graph (from the second query).

Only these modules import torch and transformers, and only when a model is loaded.
"""

from rag.models.batching import batched, prefetch
from rag.models.clip import CLIP_MAX_TOKENS, ClipTransformersEmbedding
from rag.models.hub import configure_threads, describe_load_failure, prefer_local_files, quiet_model_loading, resolve_device
from rag.models.image import ImageBatchPipeline, image_batch_pipeline, load_image_embedding
from rag.models.precision import (
    INT8_WARNING,
    PRECISION_MIN_COSINE,
    PRECISIONS,
    native_bf16,
    precision_context,
    precision_label,
    prepare_model,
    resolve_precision,
)
from rag.models.text import load_text_embedding, load_text_tokenizer, query_instruction_for, text_embedding_class

__all__ = [
    "CLIP_MAX_TOKENS", "ClipTransformersEmbedding", "ImageBatchPipeline", "INT8_WARNING", "PRECISION_MIN_COSINE",
    "PRECISIONS", "batched", "configure_threads", "describe_load_failure", "image_batch_pipeline",
    "load_image_embedding", "load_text_embedding", "load_text_tokenizer", "native_bf16", "precision_context",
    "precision_label", "prefer_local_files", "prefetch", "prepare_model", "query_instruction_for",
    "quiet_model_loading", "resolve_device", "resolve_precision", "text_embedding_class",
]
