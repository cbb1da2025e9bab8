"""Storage formats: the old qdrant-client folder is detected, and `rag migrate` converts it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rag.cli import main
from rag.errors import StorageError
from rag.index.core import RagIndex
from rag.index.ingest import ingest
from rag.search.retriever import Retriever


def test_old_format_gets_the_migrate_command_then_migrates(settings, shared_embeddings, corpus):
    local = settings.with_overrides(store="local")
    with RagIndex(local, text_embedding=shared_embeddings["text"], image_embedding=shared_embeddings["image"]) as index:
        ingest(index, [corpus], progress=False)
        before = [h.node_id for h in Retriever(index).search("moon", image=corpus / "rocket.jpg")]

    edge = settings.with_overrides(store="edge")
    with pytest.raises(StorageError) as info:
        RagIndex(edge)
    assert str(info.value) == (
        f"{settings.storage} holds an index in the 'local' format but RAG_STORE='edge'. "
        f"Open it with RAG_STORE=local, or convert it with: rag migrate --storage {settings.storage} --to edge"
    )

    result = CliRunner().invoke(main, ["migrate", "--storage", str(settings.storage)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "3 text points, 3 image points" in result.output
    assert (settings.storage / "qdrant.migrated").is_dir()

    with RagIndex(edge, text_embedding=shared_embeddings["text"], image_embedding=shared_embeddings["image"]) as index:
        assert index.counts() == {"text": 3, "image": 3}
        assert [h.node_id for h in Retriever(index).search("moon", image=corpus / "rocket.jpg")] == before
        report = ingest(index, [corpus], progress=False)
        assert report.unchanged == 6  # the ledger still knows every file: nothing is embedded again


def test_migrate_without_an_old_index_says_so(tmp_path):
    result = CliRunner().invoke(main, ["migrate", "--storage", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {tmp_path} has no qdrant-client local index (no {tmp_path}/qdrant folder) to migrate"
