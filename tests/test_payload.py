"""rag.stores.payload: the stock LlamaIndex payload, built faster, must mean the same thing."""

import datetime as dt
import json

import pytest
from llama_index.core.schema import (
    Document,
    ImageNode,
    IndexNode,
    NodeRelationship,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from rag.stores.payload import node_payload, point_id_for

SOURCE = {NodeRelationship.SOURCE: RelatedNodeInfo(node_id="article-7", metadata={"k": 1})}

NODES = {
    "text": TextNode(
        id_="chunk-1", text="Café au lait — “quoted” 猫", embedding=[0.5, -0.25],
        metadata={"title": "Café", "n": 3, "score": 0.75, "ok": True, "none": None},
        excluded_llm_metadata_keys=["n"], relationships={
            **SOURCE, NodeRelationship.NEXT: RelatedNodeInfo(node_id="chunk-2")},
        start_char_idx=4, end_char_idx=40,
    ),
    "image": ImageNode(
        id_="6f9619ff-8b86-d011-b42d-00c04fc964ff", image_path="/data/a b/cat.jpg",
        text="a cat on a mat", metadata={"modality": "image", "file_path": "/data/a b/cat.jpg"},
        relationships=SOURCE, embedding=[1.0, 0.0],
    ),
    "document": Document(text="whole article", metadata={"title": "T"}, id_="doc-1"),
    "index": IndexNode(text="pointer", index_id="other", id_="idx-1"),
    "no source": TextNode(text="orphan", id_="orphan-1"),
    "rich metadata": TextNode(
        text="x", id_="rich-1",
        metadata={"when": dt.datetime(2024, 5, 6, 7, 8, 9), "tags": ("a", "b"), "nested": {"x": [1, 2]}},
    ),
}


@pytest.mark.parametrize("name", list(NODES))
def test_payload_means_what_the_stock_payload_means(name):
    node = NODES[name]
    ours, stock = node_payload(node), node_to_metadata_dict(node)
    assert list(ours) == list(stock)  # same keys in the same order
    assert {k: v for k, v in ours.items() if k != "_node_content"} == {
        k: v for k, v in stock.items() if k != "_node_content"}
    assert json.loads(ours["_node_content"]) == json.loads(stock["_node_content"])
    back, stock_back = metadata_dict_to_node(ours), metadata_dict_to_node(stock)
    assert type(back) is type(stock_back) and back == stock_back
    if name in ("text", "image", "index"):
        assert type(back) is type(node) and back.text == node.text
    assert back.embedding is None and node.embedding == NODES[name].embedding  # input untouched


def test_ref_doc_id_and_node_type_at_top_level():
    p = node_payload(NODES["image"])
    assert (p["doc_id"], p["document_id"], p["ref_doc_id"], p["_node_type"]) == (
        "article-7", "article-7", "article-7", "ImageNode")
    assert node_payload(NODES["no source"])["doc_id"] == "None"  # as the stock store writes it


def test_flat_metadata_is_enforced_like_stock():
    with pytest.raises(ValueError, match="Value for metadata tags must be one of"):
        node_payload(NODES["rich metadata"], flat_metadata=True)
    assert node_payload(NODES["text"], flat_metadata=True)["title"] == "Café"


def test_point_ids():
    u = "6F9619FF-8B86-D011-B42D-00C04FC964FF"
    assert point_id_for(u) == point_id_for(u.lower()) == u.lower()
    assert point_id_for("{" + u + "}") == u.lower()
    assert point_id_for("chunk-1") == point_id_for("chunk-1") != point_id_for("chunk-2")
    assert point_id_for("chunk-1") == "99c5cf54-f631-5781-a5ef-69c924a4b34c"  # never changes
