"""rag.search.nodes: the one converter between hits and LlamaIndex nodes."""

from __future__ import annotations

from llama_index.core.schema import ImageNode, NodeWithScore, TextNode

from rag.search.nodes import hit_to_node, hit_to_scored_node, node_to_hit
from rag.types import Hit

URL = "https://en.wikipedia.org/wiki/Cat"


def test_stored_nodes_become_hits():
    text = TextNode(id_="t1", text="Cats purr.", metadata={"title": "Cat", "url": URL, "file_path": "/c/cat.md",
                                                          "modality": "text"})
    hit = node_to_hit(text, 0.75)
    assert (hit.modality, hit.score, hit.node_id, hit.source, hit.title, hit.file, hit.text, hit.image_path, hit.n) == (
        "text", 0.75, "t1", URL, "Cat", "/c/cat.md", "Cats purr.", None, None)

    image = ImageNode(id_="i1", image_path="/c/cat.jpg", text="",
                      metadata={"caption": "A cat", "file_path": "/c/cat.jpg", "modality": "image"})
    hit = node_to_hit(NodeWithScore(node=image, score=0.5))
    assert (hit.modality, hit.score, hit.source, hit.text, hit.image_path, hit.title) == (
        "image", 0.5, "/c/cat.jpg", "A cat", "/c/cat.jpg", None)
    assert node_to_hit(TextNode(id_="x", text="no score")).score is None


def test_numbered_hits_round_trip_through_nodes():
    hits = [
        Hit("text", 0.9, "t1", URL, title="Cat", url=URL, file="/c/cat.md", text="Cats purr.",
            metadata={"title": "Cat", "url": URL, "file_path": "/c/cat.md", "modality": "text"}).numbered(1),
        Hit("image", 0.4, "i1", "/c/cat.jpg", file="/c/cat.jpg", text="A cat", image_path="/c/cat.jpg",
            metadata={"file_path": "/c/cat.jpg", "caption": "A cat", "modality": "image"}).numbered(2),
    ]
    scored = [hit_to_scored_node(h) for h in hits]
    assert [s.node.metadata["n"] for s in scored] == [1, 2] and [s.score for s in scored] == [0.9, 0.4]
    assert isinstance(scored[1].node, ImageNode) and scored[1].node.image_path == "/c/cat.jpg"
    back = [node_to_hit(s) for s in scored]
    assert [(b.n, b.modality, b.node_id, b.source, b.title, b.url, b.file, b.text, b.image_path, b.score)
            for b in back] == [(h.n, h.modality, h.node_id, h.source, h.title, h.url, h.file, h.text, h.image_path,
                                h.score) for h in hits]
    assert "n" not in back[0].metadata


def test_a_hit_without_number_carries_none():
    node = hit_to_node(Hit("text", 1.0, "a", "notes.md", text="x"))
    assert "n" not in node.metadata and node.metadata["source"] == "notes.md" and node.node_id == "a"
    assert node_to_hit(node).source == "notes.md" and node_to_hit(node).n is None
