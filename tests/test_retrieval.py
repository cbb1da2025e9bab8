"""Retrieval: which hit ranks first for text, image and joint queries; filters; reuse."""

from __future__ import annotations

import pytest
from llama_index.core.schema import QueryBundle
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from rag.errors import RagError
from rag.index.core import RagIndex
from rag.index.ingest import ingest
from rag.search.retriever import Retriever, average_vectors
from rag.search.signals import FusionSettings

from conftest import photo


@pytest.fixture
def retriever(open_test_index, corpus):
    index = open_test_index()
    ingest(index, [corpus], progress=False)
    return Retriever(index)


def test_image_query_ranks_the_same_photo_first(retriever, corpus):
    for name in ("chelsea.png", "coffee.png", "rocket.jpg"):
        hits = retriever.search(image=corpus / name, image_top_k=3, top_k=0)
        assert [h.modality for h in hits] == ["image"] * 3
        assert hits[0].image_path == str((corpus / name).resolve())
        assert hits[0].signals["clip_image"]["rank"] == 1
        assert hits[0].signals["clip_image"]["score"] == pytest.approx(1.0, abs=1e-4)


def test_text_query_returns_one_list_within_each_top_k(retriever):
    hits = retriever.search("the cat", top_k=2, image_top_k=1)
    assert sorted(h.modality for h in hits) == ["image", "text", "text"]
    assert all(h.text for h in hits if h.modality == "text")
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.signals for h in hits)


def test_hits_carry_title_source_and_file(retriever, corpus):
    hit = retriever.search("moon", top_k=3, image_top_k=0)
    titles = {h.title for h in hit}
    assert titles == {"Cat", "coffee", "Moon"}
    moon = next(h for h in hit if h.title == "Moon")
    assert moon.source == moon.file == str((corpus / "moon.md").resolve())
    assert moon.text == "The Moon is the natural satellite of the Earth."
    assert "image_path" not in moon.to_dict()


def test_joint_query_combines_text_and_image(retriever, corpus):
    hits = retriever.search("a photo", image=corpus / "rocket.jpg", top_k=1, image_top_k=2)
    assert sorted(h.modality for h in hits) == ["image", "image", "text"]
    images = [h for h in hits if h.modality == "image"]
    assert images[0].image_path.endswith("rocket.jpg")
    assert {"clip", "clip_image"} <= set(images[0].signals)


def test_metadata_filters_apply_to_both_collections(retriever):
    hits = retriever.search("anything", top_k=5, image_top_k=5, filters={"file_name": "moon.md"})
    assert [(h.modality, h.title) for h in hits] == [("text", "Moon")]
    only_images = MetadataFilters(filters=[MetadataFilter(key="modality", value="image", operator=FilterOperator.EQ)])
    assert {h.modality for h in retriever.search("x", filters=only_images)} == {"image"}


def test_empty_query_without_image_is_refused(retriever, tmp_path):
    with pytest.raises(RagError, match=r"nothing to search for: give a text query, an image \(--image PATH\), or both"):
        retriever.search("   ")
    with pytest.raises(RagError, match=r"missing\.png: no such image file"):
        retriever.search(image=tmp_path / "missing.png")


def test_a_query_bundle_can_be_reused(retriever):
    """Stock defect 2: text-to-image retrieval overwrote the bundle's embedding."""
    llama = retriever.as_llama_retriever(top_k=2, image_top_k=2)
    bundle = QueryBundle("the cat")
    first = llama.retrieve(bundle)
    second = llama.retrieve(bundle)
    assert [n.node.node_id for n in first] == [n.node.node_id for n in second]
    assert len(first) == 4 and bundle.embedding is None


def test_image_only_query_loads_no_text_model(settings, shared_embeddings, corpus):
    index = RagIndex(settings, text_embedding=shared_embeddings["text"], image_embedding=shared_embeddings["image"])
    ingest(index, [corpus], progress=False)
    index.close()
    reopened = RagIndex(settings, image_embedding=shared_embeddings["image"])
    try:
        Retriever(reopened).search(image=corpus / "coffee.png")
        assert reopened._text_embedding is None
    finally:
        reopened.close()


def test_average_vectors_is_normalised():
    joint = average_vectors([1.0, 0.0], [0.0, 1.0])
    assert joint == pytest.approx([2 ** -0.5, 2 ** -0.5])


ARTICLES = {
    "hopper.md": "# Grace Hopper\n\nGrace Hopper was a computer scientist and United States Navy rear admiral. "
                 "She wrote one of the first compilers, which translated English-like instructions into machine code.",
    "moon.md": "# Moon\n\nThe Moon orbits the Earth about once every 27 days. It is the fifth largest "
               "natural satellite in the Solar System and its gravity drives the ocean tides.",
    "coffee.md": "# Coffee\n\nCoffee is brewed from roasted seeds of the Coffea plant. Caffeine makes it a popular "
                 "morning drink, and Ethiopia is thought to be where it was first found.",
    "horse.md": "# Horse\n\nThe horse is a hoofed mammal domesticated thousands of years ago and used for riding, "
                "farm work and racing.",
}


def test_real_minilm_ranks_the_right_passage_first(tmp_path, minilm_dir, settings):
    """Real sentence semantics (MiniLM from PyPI) through the same loader BGE uses."""
    folder = tmp_path / "articles"
    folder.mkdir()
    for name, text in ARTICLES.items():
        (folder / name).write_text(text, encoding="utf-8")
    settings = settings.with_overrides(text_model=str(minilm_dir))
    with RagIndex(settings) as index:
        ingest(index, [folder], progress=False)
        retriever = Retriever(index)
        questions = {
            "Who invented an early program that turns human-readable code into machine instructions?": "Grace Hopper",
            "What causes the tides in the sea?": "Moon",
            "Which drink contains caffeine and is made from beans?": "Coffee",
            "Which animal do jockeys ride in races?": "Horse",
        }
        for question, title in questions.items():
            hits = retriever.search(question, top_k=4, image_top_k=0)
            assert hits[0].title == title, (question, [h.title for h in hits])


@pytest.mark.parametrize("store", ["edge", "local"])
def test_no_hit_breaks_the_filters_even_where_a_signal_cannot_test_them(open_test_index, settings, store):
    """The signal stores keep scalar metadata only, so their legs cannot test a filter on a list
    field: their candidates are checked against the collection before fusion, so the list holds
    only hits that keep the filters, and as many as asked for."""
    from dataclasses import replace

    from llama_index.core.schema import TextNode

    index = open_test_index(replace(settings, store=store))
    rows = [(f"The Moon draft report number {i}.", f"Draft {i}", ["draft", "space"]) for i in range(3)]
    rows += [(f"Notes on the Moon and its orbit, part {i}.", f"Final {i}", ["final"]) for i in range(3)]
    nodes = [TextNode(id_=f"00000000-0000-4000-8000-00000000000{i}", text=text, metadata={"title": title, "tags": tags})
             for i, (text, title, tags) in enumerate(rows)]
    for node, vector in zip(nodes, index.text_embedding.get_text_embedding_batch([n.text for n in nodes])):
        node.embedding = vector
    index.add(nodes, [])
    retriever = Retriever(index)
    unfiltered = retriever.search("moon draft", top_k=3, image_top_k=0)
    assert unfiltered[0].title.startswith("Draft") and len(unfiltered) == 3  # BM25 finds the drafts
    not_draft = MetadataFilters(filters=[MetadataFilter(key="tags", value=["draft"], operator=FilterOperator.IN)],
                                condition="not")  # no tag is "draft"
    hits = retriever.search("moon draft", top_k=3, image_top_k=0, filters=not_draft)
    assert sorted(h.title for h in hits) == ["Final 0", "Final 1", "Final 2"]
    lexical = FusionSettings().using("bm25")  # the drafts outrank every final there
    assert sorted(h.title for h in retriever.search("moon draft", top_k=3, image_top_k=0, fusion=lexical)) == [
        "Draft 0", "Draft 1", "Draft 2"]
    hits = retriever.search("moon draft", top_k=3, image_top_k=0, filters=not_draft, fusion=lexical)
    assert sorted(h.title for h in hits) == ["Final 0", "Final 1", "Final 2"]


def test_reading_ids_under_an_or_filter_gives_only_the_matching_points(open_test_index, settings):
    """qdrant-client stores: the stock read put the ids among an OR filter's alternatives."""
    from dataclasses import replace

    from llama_index.core.schema import TextNode

    index = open_test_index(replace(settings, store="local"))
    nodes = [TextNode(id_=f"00000000-0000-4000-8000-00000000000{i}", text=title, metadata={"title": title},
                      embedding=[1.0] + [0.0] * 31) for i, title in enumerate(["Draft", "Final"])]
    index.stores.text.add(nodes)
    either = MetadataFilters(filters=[MetadataFilter(key="title", value="Final"), MetadataFilter(key="title", value="x")],
                             condition="or")
    ids = [n.node_id for n in nodes]
    assert [n.metadata["title"] for n in index.stores.text.get_nodes(node_ids=ids, filters=either)] == ["Final"]
    assert index.stores.text.ids_matching(ids, either) == {ids[1]}
