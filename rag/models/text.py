"""The text model: BGE (or any sentence-transformers model) through
`llama-index-embeddings-huggingface`, with BGE's query instruction on queries and a precision."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, List, Optional

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from rag.config import BGE_QUERY_INSTRUCTION, Settings
from rag.models.graph import GRAPH_INPUTS, GraphForward, graph_allowed
from rag.models.hub import configure_threads, describe_load_failure, prefer_local_files, quiet_model_loading, resolve_device
from rag.models.precision import precision_context, prepare_model, resolve_precision


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
        graph: bool = Field(default=True, description="trace the transformer's forward pass after its first query "
                                                      "(CPU, fp32; rag.models.graph)")
        _graph_forward: Any = PrivateAttr(default=None)

        def __init__(self, *args: Any, precision: str = "fp32", graph: bool = True, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.precision = resolve_precision(precision, str(self._device))
            prepare_model(self._model, self.precision)
            self.graph = graph and graph_allowed(str(self._device), self.precision)
            self._graph_forward = install_graph(self._model, self.graph)

        @classmethod
        def class_name(cls) -> str:
            return "RagTextEmbedding"

        def _embed(self, inputs: List[Any], prompt_name: Optional[str] = None) -> List[List[float]]:
            # Autocast state is per thread: enter it here, in the thread that runs the forward pass.
            _QUERY_CALL.active = prompt_name == "query"  # only queries lead to the trace (rag.models.graph)
            try:
                with precision_context(self.precision, str(self._device)):
                    return super()._embed(inputs, prompt_name)
            finally:
                _QUERY_CALL.active = False

        def trace_graph(self) -> bool:
            """Trace the forward pass now rather than at the second query; True when the graph is in use."""
            return self._graph_forward is not None and self._graph_forward.trace()

        def get_query_embedding_batch(self, queries: List[str]) -> List[List[float]]:
            """Many queries (with the query instruction) in one forward pass."""
            return self._embed(list(queries), prompt_name="query")

    _TEXT_EMBEDDING_CLASS = RagTextEmbedding
    return RagTextEmbedding


_QUERY_CALL = threading.local()  # `active` while this thread embeds queries


def _last_hidden_state(model: Any, **inputs: Any) -> Any:
    return type(model).forward(model, **inputs, return_dict=True).last_hidden_state


def install_graph(sentence_model: Any, enabled: bool) -> Optional[GraphForward]:
    """Route the sentence-transformers model's transformer calls through a `GraphForward`.

    The transformer's `forward` is replaced on the instance: calls with only the graph's inputs
    (what `encode` passes) go through the graph; any other call runs the original. Only a
    transformer whose output sentence-transformers reads as `last_hidden_state` (every BERT-like
    embedding model) is routed; others, or one asked for its hidden states, are left alone.
    """
    if not enabled:
        return None
    module = next((m for m in sentence_model if hasattr(m, "auto_model")), None)
    tokenizer = getattr(sentence_model, "tokenizer", None)
    if module is None or tokenizer is None:
        return None
    backbone = module.auto_model
    reads = (getattr(module, "modality_config", None) or {}).get("text", {})
    if reads.get("method", "forward") != "forward" or reads.get("method_output_name", "last_hidden_state") not in (
            "last_hidden_state", ("last_hidden_state",), ["last_hidden_state"]):
        return None
    if getattr(backbone.config, "output_hidden_states", False):
        return None
    from transformers.modeling_outputs import BaseModelOutput

    def example() -> dict:
        batch = tokenizer(["a query", "a longer query about a bridge over a river"], padding=True, return_tensors="pt")
        return {name: batch[name] for name in GRAPH_INPUTS if name in batch}

    graph = GraphForward(backbone, _last_hidden_state, example, label=f"text model {type(backbone).__name__}")
    original = backbone.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        return_dict = kwargs.pop("return_dict", True)
        if args or return_dict is False or not set(kwargs) <= set(GRAPH_INPUTS):
            return original(*args, return_dict=return_dict, **kwargs)
        return BaseModelOutput(last_hidden_state=graph(kwargs, count=getattr(_QUERY_CALL, "active", False)))

    backbone.forward = forward
    return graph


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
            graph=settings.text_graph == "on",
        )
    except Exception as exc:  # any loader failure becomes one clear message
        raise describe_load_failure("text", name, "RAG_TEXT_MODEL", exc) from exc


def load_text_tokenizer(settings: Settings) -> Any:
    """The text model's own tokenizer, used to size chunks in its tokens."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(settings.text_model)
    except Exception as exc:
        raise describe_load_failure("text", settings.text_model, "RAG_TEXT_MODEL", exc) from exc
