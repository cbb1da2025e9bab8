"""Embedding models: the only module that imports torch and transformers.

- Text: BGE through `llama-index-embeddings-huggingface` (sentence-transformers), with BGE's
  query instruction on queries.
- Images (and text-to-image queries): CLIP through transformers' `CLIPModel`, as a LlamaIndex
  `MultiModalEmbedding` that batches, runs under `torch.inference_mode()`, L2-normalises and
  truncates text at CLIP's 77 tokens. The stock `ClipEmbedding` stays selectable
  (`RAG_IMAGE_BACKEND=clip`), but needs the `clip` package and torchvision.

Model names accept a hub id or a local directory; the device is CUDA when present.

Precision (`RAG_PRECISION`, `Settings.precision`):

- `auto` (default): `bf16` on a CPU with native bfloat16 (AVX512-BF16 or AMX), else `fp32`.
- `fp32`: the reference forward pass.
- `bf16`: the forward pass under `torch.autocast(bfloat16)` (matmuls in bf16, reductions in
  fp32), Linear weights stored in bf16. Measured cosine to fp32 >= 0.9999 (real MiniLM on real
  text, CLIP ViT-B/32 shapes on real photos), 1.5-2x faster on CPUs with native bf16 (see
  docs/benchmarks.md); slower than fp32 on CPUs without it, hence `auto`.
- `int8`: dynamic int8 quantization of every Linear layer. Opt-in only and labelled (a
  warning at load, `precision_label`): about 1.8x faster but only ~0.95 cosine to fp32, so
  its vectors are not interchangeable with fp32/bf16 ones.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, TypeVar, Union

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from PIL import Image

from rag.config import BGE_QUERY_INSTRUCTION, SPEC_BY_NAME, Settings
from rag.media.images import DEFAULT_MAX_PIXELS, open_image
from rag.errors import ModelLoadError

logger = logging.getLogger(__name__)

CLIP_MAX_TOKENS = 77
ImageInput = Union[str, Path, Image.Image]
T = TypeVar("T")
R = TypeVar("R")

PRECISIONS = SPEC_BY_NAME["precision"].choices  # declared once, in rag.config
# The agreement each precision keeps with the fp32 forward pass (cosine of the unit vectors),
# as measured in docs/benchmarks.md and asserted by tests/test_embedding_equivalence.py.
PRECISION_MIN_COSINE = {"fp32": 0.99999, "bf16": 0.999, "int8": None}
INT8_WARNING = (
    "precision int8 (dynamic int8 quantization) is an opt-in speed mode: about 1.8x faster on CPU "
    "but its vectors are only ~0.95 cosine-similar to the fp32 model's, so rankings change and an index "
    "built in another precision should not be mixed with it. Use RAG_PRECISION=auto (bf16 where the CPU "
    "has native bf16, else fp32) for results that match the reference model."
)


def native_bf16() -> bool:
    """Does this CPU compute bfloat16 natively (AVX512-BF16 or AMX)? Emulated bf16 is slower than fp32."""
    import torch

    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # pragma: no cover - private probes may change between torch releases
            continue
    return False


def resolve_precision(precision: str = "auto", device: str = "cpu") -> str:
    """`auto` -> `bf16` on a CPU with native bf16, else `fp32`; anything else is checked and passed on."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ModelLoadError(f"unknown RAG_PRECISION {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device == "cpu" and native_bf16() else "fp32"
    if precision == "int8" and device != "cpu":
        raise ModelLoadError(f"RAG_PRECISION=int8 (dynamic quantization) runs on the CPU only, but the device is {device!r}")
    return precision


def precision_label(precision: str) -> str:
    """How a precision is shown to users (`rag info`, logs): int8 says what it trades."""
    if precision == "int8":
        return "int8 (dynamic quantization: faster, ~0.95 cosine to fp32; opt-in)"
    if precision == "bf16":
        return "bf16 (autocast; >= 0.999 cosine to fp32)"
    return precision


def precision_context(precision: str, device: str = "cpu") -> Any:
    """The context a forward pass runs in: bf16 autocast, or nothing (fp32, int8)."""
    if precision == "bf16":
        import torch

        return torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cast_linear_bf16(module: Any) -> Any:
    """Store every Linear layer's weights in bfloat16, in place (for `bf16` precision).

    Under autocast a Linear layer casts its fp32 weights to bf16 on every call (the cast cache
    lives only as long as one autocast block): 22M-88M parameters re-cast per query. Casting
    them once gives the very same numbers (autocast makes the same cast) without that cost,
    and halves their memory. Embeddings and LayerNorms stay fp32. The forward pass must then
    run under `precision_context("bf16")`, as every call in this module does.

    The tensors left in fp32 are then copied out of the model file's memory map: while any of
    them points into it, the whole map stays mapped and every page the cast read stays
    resident (measured: 1,089 -> 629 MiB RSS for CLIP ViT-B/32).
    """
    import torch

    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.to(torch.bfloat16)
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.dtype != torch.bfloat16:
            tensor.data = tensor.data.clone()
    return module


def prepare_model(module: Any, precision: str) -> Any:
    """Apply a precision's one-time model change: bf16 Linear weights, or int8 quantization."""
    if precision == "bf16":
        return cast_linear_bf16(module)
    if precision == "int8":
        return quantize_int8(module)
    return module


def quantize_int8(module: Any) -> Any:
    """Dynamic int8 quantization of every Linear layer, in place (weights int8, activations quantized on the fly)."""
    import torch

    warnings.warn(INT8_WARNING, UserWarning, stacklevel=3)
    logger.warning(INT8_WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def configure_threads(settings: Any) -> None:
    """Apply `torch_threads` when set (> 0); else torch's default (one thread per physical core)."""
    threads = int(settings.torch_threads or 0)
    if threads > 0:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def prefetch(fn: Callable[[T], R], items: Iterable[T], workers: int = 2, ahead: int = 8) -> Iterator[R]:
    """`map(fn, items)` on a thread pool, in order, with at most `ahead` results waiting.

    Unlike `ThreadPoolExecutor.map`, which submits every item at once (and so would hold every
    decoded image of a large corpus in memory), this keeps a bounded window in flight.
    """
    ahead = max(1, ahead)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        window: deque = deque()
        iterator = iter(items)
        for item in iterator:
            window.append(pool.submit(fn, item))
            if len(window) >= ahead:
                break
        while window:
            result = window.popleft().result()
            for item in iterator:
                window.append(pool.submit(fn, item))
                break
            yield result


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


_TEXT_EMBEDDING_CLASS: Any = None


def text_embedding_class() -> Any:
    """`HuggingFaceEmbedding` with a precision: its forward passes run in bf16 autocast when asked.

    Built on first use, so that importing this module does not import sentence-transformers.
    """
    global _TEXT_EMBEDDING_CLASS
    if _TEXT_EMBEDDING_CLASS is not None:
        return _TEXT_EMBEDDING_CLASS
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    class RagTextEmbedding(HuggingFaceEmbedding):
        """HuggingFaceEmbedding (sentence-transformers) whose forward pass honours `precision`."""

        precision: str = Field(default="fp32", description="fp32, bf16 (autocast) or int8 (dynamic quantization)")

        def __init__(self, *args: Any, precision: str = "fp32", **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.precision = resolve_precision(precision, str(self._device))
            prepare_model(self._model, self.precision)

        @classmethod
        def class_name(cls) -> str:
            return "RagTextEmbedding"

        def _embed(self, inputs: List[Any], prompt_name: Optional[str] = None) -> List[List[float]]:
            # Autocast state is per thread: enter it here, in the thread that runs the forward pass.
            with precision_context(self.precision, str(self._device)):
                return super()._embed(inputs, prompt_name)

    _TEXT_EMBEDDING_CLASS = RagTextEmbedding
    return RagTextEmbedding


def load_text_embedding(settings: Settings) -> BaseEmbedding:
    """BGE (or any sentence-transformers model) as a LlamaIndex embedding (a `HuggingFaceEmbedding`)."""
    name = settings.text_model
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    cls = text_embedding_class()
    quiet_model_loading()
    prefer_local_files(name)
    configure_threads(settings)
    try:
        return cls(
            model_name=name,
            query_instruction=query_instruction_for(name, settings.text_query_instruction) or None,
            # An explicit empty string keeps LlamaIndex from guessing one from the name.
            text_instruction="",
            normalize=True,
            embed_batch_size=settings.text_batch_size,
            device=device,
            max_length=512,
            precision=precision,
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
    precision: str = Field(default="fp32", description="fp32, bf16 (autocast), int8 (dynamic quantization) or auto")

    _model: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()
    _processor: Any = PrivateAttr()

    def __init__(self, model_name: str = "openai/clip-vit-base-patch32", **kwargs: Any) -> None:
        super().__init__(model_name=model_name, **kwargs)
        self.precision = resolve_precision(self.precision, self.device)
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
        prepare_model(self._model, self.precision)

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
        with torch.inference_mode(), precision_context(self.precision, self.device):
            features = self._features(self._model.get_text_features(**inputs))
        return self._normalise(features)

    def preprocess(self, item: Any) -> Any:
        """Decode (if needed) and preprocess one image to CLIP's pixel tensor (3 x H x W).

        Safe to call from worker threads: the ingest pipeline runs it ahead of the model.
        """
        return self._processor(images=[self._to_image(item)], return_tensors="pt")["pixel_values"][0]

    def embed_pixel_batch(self, pixels: Sequence[Any]) -> List[Embedding]:
        """One forward pass of CLIP's vision tower over preprocessed pixel tensors."""
        import torch

        batch = pixels if isinstance(pixels, torch.Tensor) else torch.stack(list(pixels))
        with torch.inference_mode(), precision_context(self.precision, self.device):
            features = self._features(self._model.get_image_features(pixel_values=batch.to(self.device)))
        return self._normalise(features)

    def embed_image_batch(self, images: Sequence[Image.Image]) -> List[Embedding]:
        """One forward pass of CLIP's vision tower over already decoded RGB images."""
        return self.embed_pixel_batch(self._processor(images=list(images), return_tensors="pt")["pixel_values"])

    def _to_image(self, item: Any) -> Image.Image:
        if isinstance(item, Image.Image):
            return item if item.mode == "RGB" else item.convert("RGB")
        if hasattr(item, "read"):  # BytesIO, as LlamaIndex's ImageType allows
            from rag.media.images import normalise

            return normalise(Image.open(item))
        return open_image(item, self.max_pixels)

    def iter_image_embeddings(self, items: Iterable[ImageInput]) -> Iterator[Embedding]:
        """Embed images in batches; decoding and preprocessing of the next batch (in worker
        threads, at most two batches ahead) overlaps the current forward pass."""
        batch: List[Any] = []
        for pixels in prefetch(self.preprocess, items, self.decode_workers, 2 * self.embed_batch_size):
            batch.append(pixels)
            if len(batch) == self.embed_batch_size:
                yield from self.embed_pixel_batch(batch)
                batch = []
        if batch:
            yield from self.embed_pixel_batch(batch)

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
        raise _describe_load_failure("image", settings.image_model, "RAG_IMAGE_MODEL", exc) from exc


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
