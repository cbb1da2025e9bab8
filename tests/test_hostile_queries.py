"""Hostile queries: empty, enormous, odd top-k, odd filters, bad query images.

The pure checks live in `SearchRequest.validate()` / `AskRequest.validate()`; `RagService`
calls them (and checks the query image's file) before any model or store is touched; the CLI
shows their messages as one line.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rag.cli import main
from rag.errors import BadInputError, RagError
from rag.types import (
    MAX_QUERY_CHARS,
    MAX_TOP_K,
    NOTHING_TO_ASK,
    NOTHING_TO_SEARCH,
    AskRequest,
    SearchRequest,
    SearchResult,
    truncation_note,
)


# --------------------------------------------------------------------------- pure checks


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query_is_refused(query):
    with pytest.raises(BadInputError) as info:
        SearchRequest(query).validate()
    assert str(info.value) == NOTHING_TO_SEARCH
    with pytest.raises(BadInputError) as info:
        AskRequest(query).validate()
    assert str(info.value) == NOTHING_TO_ASK


def test_an_image_alone_is_a_query():
    assert SearchRequest("", image="x.png").validate() == []
    assert AskRequest("", image="x.png").validate() == []


@pytest.mark.parametrize("field, value, message", [
    ("top_k", -1, f"top_k must be from 0 to {MAX_TOP_K} (got -1)"),
    ("top_k", 10**9, f"top_k must be from 0 to {MAX_TOP_K} (got 1000000000)"),
    ("image_top_k", -5, f"image_top_k must be from 0 to {MAX_TOP_K} (got -5)"),
    ("image_top_k", MAX_TOP_K + 1, f"image_top_k must be from 0 to {MAX_TOP_K} (got 1001)"),
    ("top_k", "5", f"top_k must be a whole number from 0 to {MAX_TOP_K}, not '5'"),
    ("top_k", 2.5, f"top_k must be a whole number from 0 to {MAX_TOP_K}, not 2.5"),
    ("top_k", True, f"top_k must be a whole number from 0 to {MAX_TOP_K}, not True"),
])
def test_top_k_out_of_range(field, value, message):
    for cls in (SearchRequest, AskRequest):
        with pytest.raises(BadInputError) as info:
            cls("cats", **{field: value}).validate()
        assert str(info.value) == message


def test_top_k_limits_themselves_are_fine():
    assert SearchRequest("cats", top_k=0, image_top_k=MAX_TOP_K).validate() == []
    assert SearchRequest("cats", top_k=MAX_TOP_K, image_top_k=0).validate() == []


def test_both_top_k_zero_is_refused():
    with pytest.raises(BadInputError) as info:
        SearchRequest("cats", top_k=0, image_top_k=0).validate()
    assert str(info.value) == "top_k and image_top_k are both 0: nothing would be returned"


@pytest.mark.parametrize("filters, message", [
    ({"": "x"}, "filter keys must be non-empty text (got '')"),
    ({"  ": "x"}, "filter keys must be non-empty text (got '  ')"),
    ({3: "x"}, "filter keys must be non-empty text (got 3)"),
    ({"title": ["a", "b"]}, "the filter title must have a text, number or true/false value (got list)"),
    ({"title": None}, "the filter title must have a text, number or true/false value (got NoneType)"),
    ({"title": {"$ne": 1}}, "the filter title must have a text, number or true/false value (got dict)"),
    (["title=x"], "filters must be a mapping of metadata key to value, not list"),
    ("title=x", "filters must be a mapping of metadata key to value, not str"),
])
def test_bad_filters(filters, message):
    with pytest.raises(BadInputError) as info:
        SearchRequest("cats", filters=filters).validate()
    assert str(info.value) == message


def test_wrong_types_for_query_and_image():
    with pytest.raises(BadInputError, match="^the query must be text, not int$"):
        SearchRequest(42).validate()  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="^the question must be text, not bytes$"):
        AskRequest(b"hi").validate()  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="^image must be a file path, not int$"):
        SearchRequest("x", image=3).validate()  # type: ignore[arg-type]


def test_enormous_query_is_cut_and_said_so():
    text = "cat " * 100_000  # 400,000 characters
    request = SearchRequest(text)
    notes = request.validate()
    assert notes == [truncation_note(400_000)]
    assert notes[0] == "The query was 400,000 characters long; only its first 10,000 were used."
    assert request.query == text[:MAX_QUERY_CHARS]
    ask = AskRequest(text)
    assert ask.validate() == notes and len(ask.question) == MAX_QUERY_CHARS
    # exactly at the limit: nothing cut, nothing said
    assert SearchRequest("x" * MAX_QUERY_CHARS).validate() == []


def test_search_result_notes_round_trip():
    assert SearchResult().to_dict() == {"hits": []}
    result = SearchResult([], ["cut"])
    assert SearchResult.from_dict(result.to_dict()).notes == ["cut"]


# --------------------------------------------------------------------------- through the service


@pytest.fixture
def service(settings, open_test_index, corpus):
    from rag.service import RagService

    svc = RagService(index=open_test_index(settings))
    svc.ingest([corpus])
    yield svc
    svc.close()


def test_service_refuses_bad_requests_before_any_search(service):
    with pytest.raises(BadInputError, match="^top_k must be from 0 to 1000 \\(got -3\\)$"):
        service.search("cats", top_k=-3)
    with pytest.raises(BadInputError, match="^image_top_k must be from 0 to 1000 \\(got 5000\\)$"):
        service.ask("cats", image_top_k=5000)
    with pytest.raises(BadInputError, match=f"^{NOTHING_TO_ASK}$"):
        service.stream("")


def test_enormous_query_searches_and_asks(service):
    text = "The cat is a small domestic animal that purrs. " * 8000  # ~380,000 characters
    result = service.search(text, top_k=2, image_top_k=1)
    assert sorted(h.modality for h in result.hits) == ["image", "text", "text"]  # one list, fused across kinds
    assert result.hits[0].modality == "text"  # the passage about cats leads
    assert result.notes == [truncation_note(len(text))]
    answer = service.ask(text, top_k=1, image_top_k=0)
    assert answer.notes[0] == truncation_note(len(text))
    assert len(answer.question) == MAX_QUERY_CHARS and len(answer.prompt) < 2 * MAX_QUERY_CHARS
    stream = service.stream(text, top_k=1, image_top_k=0)
    assert list(stream) == [] and stream.answer.notes[0] == truncation_note(len(text))


def test_filter_with_unknown_key_finds_nothing(service):
    assert service.search("cat", filters={"no_such_key": "x"}).hits == []


def test_huge_but_allowed_top_k_returns_what_there_is(service):
    hits = service.search("cat", top_k=MAX_TOP_K, image_top_k=MAX_TOP_K).hits
    assert sorted(h.modality for h in hits) == ["image"] * 3 + ["text"] * 3


@pytest.fixture
def bad_images(tmp_path):
    svg = tmp_path / "drawing.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    svg_as_png = tmp_path / "vector.png"
    svg_as_png.write_text('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>')
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 50)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    return {
        "missing": (tmp_path / "nope.png", "no such image file"),
        "svg": (svg, "SVG is a vector format; it is not supported (convert it to PNG)"),
        "svg_as_png": (svg_as_png, "SVG is a vector format; it is not supported (convert it to PNG)"),
        "corrupt": (corrupt, None),
        "empty": (empty, "empty file (0 bytes)"),
        "folder": (folder, "not a file"),
    }


@pytest.mark.parametrize("kind", ["missing", "svg", "svg_as_png", "corrupt", "empty", "folder"])
def test_bad_query_image_names_the_file(service, bad_images, kind):
    path, reason = bad_images[kind]
    for call in (service.search, service.ask, service.stream):
        with pytest.raises(BadInputError) as info:
            call("cat", image=str(path))
        assert info.value.path == str(path)
        if reason:
            assert info.value.reason == reason
        else:
            assert info.value.reason.startswith(("corrupt or truncated image", "not a recognised image format"))


# --------------------------------------------------------------------------- through the CLI


@pytest.fixture
def cli(settings, corpus):
    env = {"RAG_STORAGE": str(settings.storage), "RAG_TEXT_MODEL": settings.text_model,
           "RAG_IMAGE_MODEL": settings.image_model, "RAG_STORE": settings.store}

    def invoke(*args):
        return CliRunner().invoke(main, list(args), env=env)

    assert invoke("ingest", str(corpus), "-q").exit_code == 0
    return invoke


def test_cli_huge_top_k_is_one_line(cli):
    result = cli("search", "cat", "--top-k", "100000")
    assert result.exit_code == 1
    assert result.output == "Error: top_k must be from 0 to 1000 (got 100000)\n"
    result = cli("search", "cat", "--top-k", "0", "--image-top-k", "0", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"error": {
        "message": "top_k and image_top_k are both 0: nothing would be returned", "type": "BadInputError"}}


def test_cli_negative_top_k_is_a_usage_error(cli):
    result = cli("search", "cat", "--top-k", "-1")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_cli_unknown_filter_key_says_no_hits(cli):
    result = cli("search", "cat", "--filter", "colour=blue")
    assert result.exit_code == 0
    assert result.output == "No hits match the filter colour=blue.\n"


@pytest.mark.parametrize("bad", ["colour", "=blue", ""])
def test_cli_filter_bad_syntax_is_a_usage_error(cli, bad):
    result = cli("search", "cat", "--filter", bad)
    assert result.exit_code == 2
    assert "--filter" in result.output and "Traceback" not in result.output


def test_cli_enormous_query(cli):
    result = cli("search", "cat " * 100_000, "--top-k", "1", "--image-top-k", "0")
    assert result.exit_code == 0
    assert "Traceback" not in result.output
    assert result.stdout.count("\n") == 3  # one hit: its title line, its snippet, what found it
    assert result.stderr == "Note: The query was 400,000 characters long; only its first 10,000 were used.\n"


def test_cli_svg_query_image(cli, bad_images):
    path, reason = bad_images["svg"]
    for args in (["search"], ["ask", "what is this?"]):
        result = cli(*args, "--image", str(path))
        assert result.exit_code == 1
        assert result.output == f"Error: {path}: {reason}\n"


def test_rag_error_is_the_base():
    assert issubclass(BadInputError, RagError)


def test_cli_search_shows_the_note_when_the_query_was_cut(monkeypatch):
    from click.testing import CliRunner

    import rag.cli.common
    from rag.service import RagService
    from rag.types import Hit

    class Fixed:
        def notes(self):
            return []

        def search(self, query="", image=None, top_k=5, image_top_k=3, filters=None, **options):
            self.query = query
            return [Hit("text", 0.5, "n1", "s", text="t")]

    fixed = Fixed()

    def open_service(settings):
        import types

        return RagService(settings, index=types.SimpleNamespace(close=lambda: None, settings=settings),
                          retriever=fixed)

    monkeypatch.setattr(rag.cli.common, "open_service", open_service)
    long_query = "moon " * 4000
    result = CliRunner().invoke(rag.cli.main, ["search", long_query, "--json"])
    assert result.exit_code == 0, result.output
    data = __import__("json").loads(result.output)
    assert len(data["hits"]) == 1 and len(fixed.query) == 10_000
    assert data["notes"] == ["The query was 20,000 characters long; only its first 10,000 were used."]
