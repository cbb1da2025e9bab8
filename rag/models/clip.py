"""CLIP through transformers' `CLIPModel` (with the PIL image processor: no torchvision needed),
as a LlamaIndex `MultiModalEmbedding` that batches, runs under `torch.inference_mode()`,
L2-normalises and truncates text at CLIP's 77 tokens (the stock `ClipEmbedding` does none of these)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, List, Sequence, Union

from llama_index.core.base.embeddings.base import Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from PIL import Image

from rag.media.images import DEFAULT_MAX_PIXELS, open_image
from rag.models.batching import batched, prefetch
from rag.models.graph import GraphForward, graph_allowed
from rag.models.hub import describe_load_failure, prefer_local_files, quiet_model_loading
from rag.models.precision import precision_context, prepare_model, resolve_precision

CLIP_MAX_TOKENS = 77
ImageInput = Union[str, Path, Image.Image]


class ClipTransformersEmbedding(MultiModalEmbedding):
    """CLIP from transformers: batched, no-grad, normalised, truncating; no torchvision needed."""

    model_name: str = Field(default="openai/clip-vit-base-patch32")
    embed_batch_size: int = Field(default=16, gt=0)
    device: str = Field(default="cpu")
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS)
    decode_workers: int = Field(default=2, ge=1)
    precision: str = Field(default="fp32", description="fp32, bf16 (autocast), int8 (dynamic quantization) or auto")
    text_graph: bool = Field(default=True, description="trace the text tower after its first query (CPU, fp32; "
                                                       "rag.models.graph)")

    _model: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()
    _processor: Any = PrivateAttr()
    _text_forward: Any = PrivateAttr()

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
            raise describe_load_failure("image", model_name, "RAG_IMAGE_MODEL", exc) from exc
        prepare_model(self._model, self.precision)
        self.text_graph = self.text_graph and graph_allowed(self.device, self.precision)
        self._text_forward = GraphForward(self._model, self._text_features, self._graph_example,
                                          enabled=self.text_graph, label=f"{model_name} text tower")

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

    @classmethod
    def _text_features(cls, model: Any, **inputs: Any) -> Any:
        return cls._features(model.get_text_features(**inputs))

    def _graph_example(self) -> dict:
        batch = self._tokenizer(["a photo", "a photo of a red bridge over a river"], padding=True, return_tensors="pt")
        return {name: batch[name].to(self.device) for name in ("input_ids", "attention_mask")}

    @staticmethod
    def _normalise(features: Any) -> List[Embedding]:
        import torch

        features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().tolist()

    def trace_graph(self) -> bool:
        """Trace the text tower now rather than at its second query; True when the graph is in use."""
        return self._text_forward.trace()

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
            features = self._text_forward({"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]})
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
        return self.get_query_embedding_batch(texts)  # CLIP encodes queries and texts alike

    def _get_text_embedding(self, text: str) -> Embedding:
        return self.embed_text_batch([text])[0]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self.embed_text_batch([query])[0]

    def get_query_embedding_batch(self, queries: List[str]) -> List[Embedding]:
        """Many text queries in one forward pass of the text tower."""
        out: List[Embedding] = []
        for batch in batched(queries, self.embed_batch_size):
            out.extend(self.embed_text_batch(batch))
        return out

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
