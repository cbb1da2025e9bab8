"""Our search as LlamaIndex sees it, both ways.

`RagRetriever` is a LlamaIndex `BaseRetriever` over anything with our `search()` (the
`Retriever` of `rag.search.retriever`): text, image or joint queries (`QueryBundle.image_path`),
filters, nodes with scores (passages then images). It works inside LlamaIndex's own engines
(`RetrieverQueryEngine.from_args`, `CitationQueryEngine`) and emits their callback events and
instrumentation spans (`BaseRetriever.retrieve` does).

`retrieve_hits` goes the other way for our query engine: hits from either kind of retriever,
a plain LlamaIndex `BaseRetriever` included, with node postprocessors applied in between.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from rag.errors import RagError
from rag.search.nodes import hit_to_scored_node, node_to_hit
from rag.types import Hit

Filters = Union[MetadataFilters, Dict[str, Any], None]


def query_image(query_bundle: QueryBundle) -> Optional[str]:
    """The image of a query bundle (`image_path`), or None for a text-only query."""
    return getattr(query_bundle, "image_path", None) or None


class RagRetriever(BaseRetriever):
    """Our search as a LlamaIndex retriever: `retrieve("...")` or `retrieve(QueryBundle(q, image_path=p))`.

    `top_k` passages and `image_top_k` images; `filters` (LlamaIndex `MetadataFilters` or a
    {key: value} dict) restrict both. Models load on the first query, never here.
    """

    def __init__(self, searcher: Any, top_k: int = 5, image_top_k: int = 3, filters: Filters = None,
                 callback_manager: Optional[CallbackManager] = None) -> None:
        super().__init__(callback_manager=callback_manager)
        if not hasattr(searcher, "search"):
            raise RagError(f"RagRetriever wraps an object with search() (our Retriever), not {type(searcher).__name__}")
        self.searcher = searcher
        self.top_k = top_k
        self.image_top_k = image_top_k
        self.filters = filters

    def __repr__(self) -> str:
        return f"RagRetriever(top_k={self.top_k}, image_top_k={self.image_top_k}, filters={self.filters!r})"

    def search_hits(self, query_bundle: QueryBundle) -> List[Hit]:
        """The typed hits for a query bundle (what `_retrieve` turns into nodes)."""
        return self.searcher.search(query_bundle.query_str, image=query_image(query_bundle), top_k=self.top_k,
                                    image_top_k=self.image_top_k, filters=self.filters)

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return [hit_to_scored_node(hit) for hit in self.search_hits(query_bundle)]


def apply_postprocessors(nodes: List[NodeWithScore], postprocessors: Sequence[Any],
                         query_bundle: QueryBundle) -> List[NodeWithScore]:
    """Run LlamaIndex node postprocessors in order (as `RetrieverQueryEngine` does)."""
    for postprocessor in postprocessors:
        nodes = postprocessor.postprocess_nodes(nodes, query_bundle=query_bundle)
    return nodes


def retrieve_hits(retriever: Any, question: str, image: Any = None, *, top_k: int = 5,
                  image_top_k: int = 3, filters: Filters = None,
                  postprocessors: Sequence[Any] = ()) -> List[Hit]:
    """Hits from our `Retriever` (anything with `search()`) or any LlamaIndex `BaseRetriever`.

    Our retriever is asked for `top_k` passages and `image_top_k` images with `filters`; a
    plain `BaseRetriever` answers a `QueryBundle(question, image_path=image)` with its own
    sizes, and cannot take filters (a RagError says to set them on that retriever). Node
    postprocessors, if any, run on the nodes before they become hits.
    """
    bundle = QueryBundle(question, image_path=str(image)) if image is not None else QueryBundle(question)
    if hasattr(retriever, "search"):
        hits = retriever.search(query=question, image=image, top_k=top_k, image_top_k=image_top_k, filters=filters)
        if not postprocessors:
            return list(hits)
        nodes = [hit_to_scored_node(hit) for hit in hits]
    elif isinstance(retriever, BaseRetriever):
        if filters:
            raise RagError(f"filters cannot be passed through a {type(retriever).__name__}: "
                           "give them to that retriever when you make it")
        nodes = retriever.retrieve(bundle)
    else:
        raise RagError(f"a query engine needs a retriever: our Retriever or a LlamaIndex BaseRetriever, "
                       f"not {type(retriever).__name__}")
    return [node_to_hit(node) for node in apply_postprocessors(list(nodes), postprocessors, bundle)]
