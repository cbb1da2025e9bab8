"""The stock-stack defects listed in shared/DESIGN.md, checked against our stack.

Covered elsewhere: 2 (QueryBundle reuse) in test_retrieval, 3 (literal {context_str}) and
8 (silent OpenAI default) in test_answer / test_llm_server, 5 (ClipEmbedding) in
test_embeddings.
"""

from __future__ import annotations

import asyncio

from rag.index.ingest import ingest
from rag.search.retriever import Retriever


def test_1_images_land_in_the_image_collection(open_test_index, corpus):
    index = open_test_index()
    ingest(index, [corpus], progress=False)
    assert index.counts()["image"] == 3
    assert Retriever(index).search("a photo", top_k=0, image_top_k=3)[0].modality == "image"


def test_4_deleting_a_document_removes_its_image_points_too(open_test_index, corpus):
    index = open_test_index()
    ingest(index, [corpus], progress=False)
    entry = index.ledger.files[str((corpus / "rocket.jpg").resolve())]
    index.delete_documents([entry.doc_id])
    assert index.counts() == {"text": 3, "image": 2}


def test_6_no_chunk_exceeds_the_text_models_512_tokens(open_test_index, corpus):
    from rag.index.ingest import embed_input

    words = " ".join(f"The moon{i} rises over the quiet sea and the stars{i} shine." for i in range(600))
    (corpus / "long.md").write_text("# A long article about the night sky\n\n" + words, encoding="utf-8")
    index = open_test_index()
    report = ingest(index, [corpus], progress=False)
    tokenizer = index.text_embedding._model.tokenizer
    nodes = [n for n in index.stores.text.get_nodes() if n.metadata["file_name"] == "long.md"]
    assert len(nodes) == report.text_nodes - 3 > 10
    longest = max(len(tokenizer.encode(embed_input(n))) for n in nodes)  # with [CLS] and [SEP]
    assert longest <= 512


def test_7_async_retrieval_works_with_the_default_store(open_test_index, corpus):
    index = open_test_index()
    ingest(index, [corpus], progress=False)
    nodes = asyncio.run(Retriever(index).as_llama_retriever(top_k=1, image_top_k=1).aretrieve("the moon"))
    assert len(nodes) == 2
    assert asyncio.run(index.stores.text.aget_nodes(node_ids=[nodes[0].node.node_id]))[0].text == nodes[0].node.text
