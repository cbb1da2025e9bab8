"""Prompt assembly, citations, the `none` backend and `rag ask` without a model: no network."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from rag.answer import engine as answer_mod
from rag.answer import llms
from conftest import FakeRetriever
from rag.answer.citations import citation_numbers, number_sources, parse_citations
from rag.answer.engine import RagQueryEngine
from rag.answer.prompt import build_prompt
from rag.config import Settings
from rag.errors import RagError
from rag.media.encode import ImageUnusable, encode_image
from rag.types import Answer, Hit
from rag.answer.llms import LLMConfigError, is_vision_model, resolve_llm

WIKI = "https://en.wikipedia.org/wiki/Eiffel_Tower"


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    big = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 400), (200, 10, 10)).save(big)
    alpha = tmp_path / "alpha.png"
    Image.new("RGBA", (50, 50), (0, 0, 255, 100)).save(alpha)
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30), (0, 255, 0)).save(small)
    return {"big": big, "alpha": alpha, "small": small}


@pytest.fixture
def hits(images) -> list[Hit]:
    return [
        Hit("text", 0.9, "t1", WIKI, title="Eiffel Tower", url=WIKI,
            text="The tower was completed in 1889. Braces {x} and {context_str} stay literal."),
        Hit("image", 0.8, "i1", WIKI, title="Eiffel Tower", url=WIKI,
            text="The tower at dusk", image_path=str(images["big"])),
        Hit("text", 0.7, "t2", "notes/paris.md", text="Paris is the capital of France."),
        Hit("text", 0.6, "t1", WIKI, title="Eiffel Tower", url=WIKI, text="duplicate of t1"),
    ]


@pytest.fixture
def no_network(monkeypatch):
    """Fail any attempt to open a socket connection."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("no network call expected")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --------------------------------------------------------------------------- sources and prompt


def test_number_sources_numbers_in_order_and_drops_repeats(hits):
    sources = number_sources(hits)
    assert [(s.n, s.node_id, s.modality) for s in sources] == [
        (1, "t1", "text"), (2, "i1", "image"), (3, "t2", "text")]


def test_prompt_lists_numbered_passages_and_images(hits, images):
    sources = number_sources(hits)
    prompt = build_prompt("When was it built?", sources, question_image=images["small"])
    text = prompt.render()
    assert text.startswith("### system\nYou answer questions using only the numbered sources")
    assert '[1] Passage from "Eiffel Tower" (https://en.wikipedia.org/wiki/Eiffel_Tower)\n' in text
    assert "Braces {x} and {context_str} stay literal." in text  # no str.format on passages
    assert '[2] Image from "Eiffel Tower"' in text and "Caption: The tower at dusk\n" in text
    assert f"<image [2]: {images['big']}>" in text
    assert "[3] Passage from notes/paris.md\nParis is the capital of France." in text
    assert "Question: When was it built?" in text
    assert f"<question image: {images['small']}>" in text
    assert [(p.n, Path(p.path).name) for p in prompt.images] == [(2, "big.jpg"), (None, "small.png")]


def test_prompt_has_no_template_placeholders():
    sources = number_sources([Hit("text", 1.0, "a", "s", text="plain passage")])
    for vision in (True, False):
        text = build_prompt("q?", sources, vision=vision).render()
        assert "{context_str}" not in text and "{query_str}" not in text


def test_text_only_prompt_uses_captions(hits, images):
    prompt = build_prompt("q", number_sources(hits), question_image=images["small"], vision=False)
    text = prompt.render()
    assert prompt.images == []
    assert "Caption: The tower at dusk\n(The image itself is not shown; rely on its caption.)" in text
    assert "small.png, which this model cannot see" in text


def test_missing_image_file_sends_caption_with_a_note(tmp_path):
    hit = Hit("image", 1.0, "i", "s", title="T", text="cap", image_path=str(tmp_path / "gone.jpg"))
    prompt = build_prompt("q", number_sources([hit]))
    assert prompt.images == []
    assert "only its caption is available" in prompt.render()
    assert prompt.notes and "gone.jpg" in prompt.notes[0]


def test_messages_carry_image_blocks_as_data_urls(hits, images):
    prompt = build_prompt("q", number_sources(hits), question_image=images["alpha"])
    system, user = prompt.to_messages(max_side=512)
    assert system.role.value == "system" and "numbered sources" in system.content
    kinds = [type(b).__name__ for b in user.blocks]
    assert kinds.count("ImageBlock") == 2 and kinds[0] == "TextBlock"
    urls = [str(b.url) for b in user.blocks if type(b).__name__ == "ImageBlock"]
    assert urls[0].startswith("data:image/jpeg;base64,")
    assert urls[1].startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1])))
    assert img.size == (512, 128)


# --------------------------------------------------------------------------- images


def test_encode_image_resizes_and_caches(images):
    encoded = encode_image(images["big"])
    assert (encoded.width, encoded.height, encoded.mime) == (768, 192, "image/jpeg")
    assert encoded.data_url.startswith("data:image/jpeg;base64,")
    assert encode_image(images["big"]) is encoded  # encoded once
    small = encode_image(images["small"])
    assert (small.width, small.height) == (40, 30)  # never enlarged
    alpha = encode_image(images["alpha"])
    assert alpha.mime == "image/png"
    assert Image.open(io.BytesIO(base64.b64decode(alpha.b64))).mode == "RGBA"


def test_encode_image_errors(tmp_path, images):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageUnusable, match="Cannot read image .*bad.jpg"):
        encode_image(bad)
    with pytest.raises(ImageUnusable, match="Cannot read image .*missing.jpg"):
        encode_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageUnusable, match="above the limit"):
        encode_image(images["big"], max_pixels=1000)


def test_unreadable_image_is_dropped_with_a_note(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    prompt = build_prompt("q", number_sources([Hit("image", 1, "i", "s", text="c", image_path=str(bad))]))
    prompt.encode_images()
    assert prompt.images == [] and "It was left out of the prompt." in prompt.notes[0]


# --------------------------------------------------------------------------- citations


@pytest.mark.parametrize(
    "text,numbers",
    [
        ("A [1]. B [2][3].", [1, 2, 3]),
        ("A [3, 1] and [2; 4].", [3, 1, 2, 4]),
        ("Range [2-4], en dash [5–6].", [2, 3, 4, 5, 6]),
        ("See [Source 2] and [sources 1, 3].", [2, 1, 3]),
        ("A [1] again [1].", [1]),
        ("A [link](http://x) and [a] and [] but [7].", [7]),
        ("", []),
    ],
)
def test_citation_numbers(text, numbers):
    assert citation_numbers(text) == numbers


def test_parse_citations_maps_numbers_to_sources(hits):
    sources = number_sources(hits)
    cited, unknown = parse_citations("Built 1889 [1]; dusk photo [2]; wrong [12].", sources)
    assert [(s.n, s.modality) for s in cited] == [(1, "text"), (2, "image")]
    assert unknown == [12]


def test_answer_to_dict():
    src = [Hit("text", None, None, "s", title="T", text="p", n=1), Hit("image", None, None, "u", image_path="x.jpg", n=2)]
    a = Answer(question="q", answer="yes [2]", sources=src, cited=[src[1]])
    data = a.to_dict()
    assert data["answer"] == "yes [2]"
    assert data["sources"][0] == {"n": 1, "modality": "text", "source": "s", "title": "T",
                                  "url": None, "text": "p", "score": None, "node_id": None}
    assert "image_path" not in data["sources"][0]
    assert data["cited"] == [data["sources"][1]] and data["cited"][0]["image_path"] == "x.jpg"
    assert "prompt" not in data
    json.dumps(data)


# --------------------------------------------------------------------------- the none backend


def test_none_backend_returns_prompt_and_sources_without_calling_anything(hits, images, no_network):
    from llama_index.core import Settings as LISettings

    retriever = FakeRetriever(hits)
    engine = RagQueryEngine.from_settings(Settings(llm="none"), retriever, top_k=7, image_top_k=2)
    assert engine.llm is None
    result = engine.ask("When was it built?", image=images["small"], filters={"title": "x"})
    assert retriever.calls == [dict(query="When was it built?", image=images["small"], top_k=7,
                                    image_top_k=2, filters={"title": "x"})]
    assert result.answer is None
    data = result.to_dict()
    assert data["answer"] is None and data["cited"] == []
    assert data["llm"]["backend"] == "none"
    assert "[1] Passage from" in data["prompt"] and "[2] Image from" in data["prompt"]
    assert "[3] Passage from notes/paris.md" in data["prompt"]
    assert [s["n"] for s in data["sources"]] == [1, 2, 3]
    assert data["sources"][1]["image_path"] == str(images["big"])
    # defect 8: no LLM given must not mean "use OpenAI"
    assert LISettings._llm is None

    response = engine.query("When was it built?")
    assert response.response == answer_mod.NO_LLM_MESSAGE
    assert response.metadata["prompt"].startswith("### system")
    assert [n.node.metadata["n"] for n in response.source_nodes] == [1, 2, 3]
    assert response.source_nodes[1].node.image_path == str(images["big"])
    assert response.source_nodes[0].score == 0.9

    stream = engine.stream("q")
    assert list(stream) == [] and stream.answer.prompt
    streaming = RagQueryEngine(retriever, None, streaming=True)
    assert streaming.query("q").response == answer_mod.NO_LLM_MESSAGE


def test_empty_question_and_bad_image_are_clear_errors(hits, tmp_path):
    engine = RagQueryEngine(FakeRetriever(hits))
    with pytest.raises(RagError, match="Ask a question, give an image, or both."):
        engine.ask("  ")
    with pytest.raises(RagError, match="does not exist or is not a file"):
        engine.ask("q", image=tmp_path / "nope.jpg")


# --------------------------------------------------------------------------- settings


def test_resolve_llm_defaults_and_errors():
    assert resolve_llm(Settings()).backend == "none"
    spec = resolve_llm(Settings(llm="openai"), environ={"OPENAI_API_KEY": "sk-x"})
    assert (spec.model, spec.base_url, spec.vision) == ("gpt-4o-mini", "https://api.openai.com/v1", True)
    assert "sk-x" not in repr(spec)
    spec = resolve_llm(Settings(llm="openai", llm_api_key="sk-rag"), environ={"OPENAI_API_KEY": "sk-x"})
    assert spec.api_key == "sk-rag"
    spec = resolve_llm(Settings(llm="ollama"))
    assert (spec.model, spec.base_url, spec.vision) == ("qwen2.5vl", "http://localhost:11434", True)
    spec = resolve_llm(Settings(llm="ollama", llm_model="llama3.1", llm_timeout="2.5"))
    assert spec.vision is False and spec.timeout == 2.5
    spec = resolve_llm(Settings(llm="ollama", llm_model="llama3.1", llm_vision="true"))
    assert spec.vision is True and not spec.may_fall_back_to_captions

    cases = [
        (dict(llm="openai"), "RAG_LLM=openai needs an API key: set OPENAI_API_KEY or RAG_LLM_API_KEY."),
        (dict(llm="openai-like"),
         "RAG_LLM=openai-like needs RAG_LLM_BASE_URL, the server's OpenAI-compatible address "
         "(for example http://localhost:8000/v1 for vLLM, http://localhost:1234/v1 for LM Studio, "
         "http://localhost:8080/v1 for llama.cpp)."),
        (dict(llm="openai-like", llm_base_url="http://h/v1"),
         "RAG_LLM=openai-like needs RAG_LLM_MODEL, the name of a model the server serves "
         "(GET <base_url>/models lists them)."),
    ]
    # Wrong types and unknown choices are refused by Settings itself: tests/test_config.py.
    for kw, message in cases:
        with pytest.raises(LLMConfigError) as info:
            resolve_llm(Settings(**kw), environ={})
        assert str(info.value) == message


@pytest.mark.parametrize(
    "model,vision",
    [
        ("gpt-4o-mini", True), ("gpt-4.1", True), ("gpt-5-mini", True), ("o3", True),
        ("o1-mini", False), ("gpt-3.5-turbo", False), ("gpt-4", False),
        ("llava", True), ("llava:13b", True), ("qwen2.5vl:7b", True), ("Qwen/Qwen2.5-VL-7B-Instruct", True),
        ("llama3.2-vision", True), ("minicpm-v", True), ("gemma3:4b", True), ("gemma3:1b", False),
        ("moondream", True), ("llama3.1:8b", False), ("qwen2.5:7b", False), ("mistral", False),
        ("", False), (None, False),
    ],
)
def test_vision_heuristic(model, vision):
    assert is_vision_model(model) is vision


def test_redact_and_display_url():
    spec = llms.LLMSpec(backend="openai-like", base_url="http://me:pw-secret@h:1/v1?x=1", api_key="sk-abc")
    assert spec.where == "http://h:1/v1"
    assert llms.redact("key sk-abc and pw-secret", spec.secrets) == "key *** and ***"


# --------------------------------------------------------------------------- CLI without a model


def test_cli_none_prints_prompt_and_sources(hits, fake_retrieval_module, monkeypatch, no_network):
    from rag.cli import main

    monkeypatch.delenv("RAG_LLM", raising=False)
    retriever = fake_retrieval_module(FakeRetriever(hits))
    result = CliRunner().invoke(main, ["ask", "When was it built?", "--image-top-k", "1"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("RAG_LLM=none: no model was called. This is the prompt that would be sent:\n")
    assert "### user\nSources:\n\n[1] Passage from \"Eiffel Tower\"" in out
    assert "Question: When was it built?" in out
    assert out.endswith(
        "Sources:\n"
        "  [1] Eiffel Tower - https://en.wikipedia.org/wiki/Eiffel_Tower\n"
        f"  [2] image: Eiffel Tower - {hits[1].image_path}\n"
        "  [3] notes/paris.md\n"
    )
    assert retriever.calls[-1]["image_top_k"] == 1

    result = CliRunner().invoke(main, ["ask", "When?", "--json"])
    data = json.loads(result.output)
    assert data["answer"] is None and "[1] Passage from" in data["prompt"]
    assert [s["n"] for s in data["sources"]] == [1, 2, 3]


def test_cli_errors(hits, fake_retrieval_module, monkeypatch, tmp_path):
    from rag.cli import main

    monkeypatch.setenv("RAG_LLM", "openai-like")
    monkeypatch.delenv("RAG_LLM_BASE_URL", raising=False)
    fake_retrieval_module(FakeRetriever(hits))
    result = CliRunner().invoke(main, ["ask", "q"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: RAG_LLM=openai-like needs RAG_LLM_BASE_URL")

    class Broken:
        def search(self, **kw):
            raise RagError("No index at ./storage: run `rag ingest` first.")

    fake_retrieval_module(Broken())
    monkeypatch.setenv("RAG_LLM", "none")
    result = CliRunner().invoke(main, ["ask", "q"])
    assert result.exit_code == 1
    assert result.output == "Error: No index at ./storage: run `rag ingest` first.\n"

    result = CliRunner().invoke(main, ["ask", "q", "--image", str(tmp_path / "nope.jpg")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_cli_help():
    from rag.cli import main

    result = CliRunner().invoke(main, ["ask", "--help"])
    assert result.exit_code == 0
    for word in ("QUESTION", "--image", "--top-k", "--image-top-k", "--json", "--no-stream",
                 "RAG_LLM", "openai-like", "rag ask"):
        assert word in result.output


# --------------------------------------------------------------------------- the attempt loop, all four drivers


class Refused(Exception):
    """What an OpenAI-compatible client raises when a text-only model gets images."""

    status_code = 400

    def __str__(self) -> str:
        return "image_url is only supported by certain models"


class FakeLLM:
    """A chat LLM that records the messages it gets; refuses images when told to."""

    def __init__(self, reply="Built in 1889 [1].", refuse_images=False, fail_after_first_delta=False):
        self.reply = reply
        self.refuse_images = refuse_images
        self.fail_after_first_delta = fail_after_first_delta
        self.calls: list[list] = []

    def _check(self, messages):
        self.calls.append(messages)
        if self.refuse_images and self.images(messages):
            raise Refused()

    @staticmethod
    def images(messages) -> int:
        return sum(type(b).__name__ == "ImageBlock" for m in messages for b in m.blocks)

    def _chunks(self):
        from llama_index.core.base.llms.types import ChatMessage, ChatResponse

        for i, word in enumerate(self.reply.split(" ")):
            if i == 1 and self.fail_after_first_delta:
                raise Refused()
            yield ChatResponse(message=ChatMessage(role="assistant", content=""), delta=word if i == 0 else " " + word)

    def chat(self, messages):
        from llama_index.core.base.llms.types import ChatMessage, ChatResponse

        self._check(messages)
        return ChatResponse(message=ChatMessage(role="assistant", content=self.reply))

    def stream_chat(self, messages):
        self._check(messages)
        return self._chunks()

    async def achat(self, messages):
        return self.chat(messages)

    async def astream_chat(self, messages):
        self._check(messages)

        async def gen():
            for chunk in self._chunks():
                yield chunk

        return gen()


def _ask_sync(engine):
    return engine.ask("When?")


def _ask_stream(engine):
    stream = engine.stream("When?")
    text = "".join(stream)
    assert text == stream.answer.answer
    return stream.answer


def _ask_async(engine):
    import asyncio

    return asyncio.run(engine.aask("When?"))


def _ask_async_stream(engine):
    import asyncio

    async def run():
        response = await engine.aquery("When?")
        text = "".join([d async for d in response.async_response_gen()])
        return text, response.metadata

    text, metadata = asyncio.run(run())
    answer = Answer.from_dict(metadata)
    assert answer.answer == text
    return answer


DRIVERS = {"ask": _ask_sync, "stream": _ask_stream, "aask": _ask_async, "astream": _ask_async_stream}


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_every_driver_falls_back_to_captions_when_images_are_refused(hits, driver):
    llm = FakeLLM(refuse_images=True)
    engine = RagQueryEngine(FakeRetriever(hits), llm, vision=True, fallback_to_captions=True,
                            streaming=driver == "astream")
    answer = DRIVERS[driver](engine)
    assert [FakeLLM.images(m) for m in llm.calls] == [1, 0]
    assert answer.answer == "Built in 1889 [1]."
    assert [s.n for s in answer.cited] == [1]
    assert answer.vision is False
    assert len(answer.notes) == 1 and "refused the images (HTTP 400: image_url is only supported" in answer.notes[0]


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_every_driver_answers_on_the_first_attempt(hits, driver):
    llm = FakeLLM()
    engine = RagQueryEngine(FakeRetriever(hits), llm, vision=True, streaming=driver == "astream")
    answer = DRIVERS[driver](engine)
    assert [FakeLLM.images(m) for m in llm.calls] == [1]
    assert answer.answer == "Built in 1889 [1]." and answer.vision is True and answer.notes == []


@pytest.mark.parametrize("driver", ["stream", "astream"])
def test_no_second_attempt_once_text_was_streamed(hits, driver):
    llm = FakeLLM(refuse_images=False, fail_after_first_delta=True)
    engine = RagQueryEngine(FakeRetriever(hits), llm, vision=True, fallback_to_captions=True,
                            streaming=driver == "astream")
    with pytest.raises(llms.ImagesRefusedError, match="refused the images"):
        DRIVERS[driver](engine)
    assert len(llm.calls) == 1


# --------------------------------------------------------------------------- RAG_MAX_IMAGE_PIXELS


def test_max_image_pixels_setting_limits_the_images_the_engine_sends(hits, images, monkeypatch):
    llm = FakeLLM()
    monkeypatch.setattr(answer_mod, "build_llm", lambda spec: llm)
    settings = Settings(llm="ollama", llm_model="llava:7b", max_image_pixels=500_000)  # big.jpg: 1600x400
    engine = RagQueryEngine.from_settings(settings, FakeRetriever(hits))
    assert engine.max_image_pixels == 500_000
    answer = engine.ask("When?", image=images["small"])
    assert FakeLLM.images(llm.calls[-1]) == 1  # the question image only
    assert answer.notes == [
        f"Image {images['big']} has 1600x400 pixels, above the limit of 500000 (RAG_MAX_IMAGE_PIXELS). "
        "It was left out of the prompt."
    ]

    engine = RagQueryEngine.from_settings(Settings(llm="ollama", llm_model="llava:7b"), FakeRetriever(hits))
    answer = engine.ask("When?", image=images["small"])
    assert FakeLLM.images(llm.calls[-1]) == 2 and answer.notes == []


# --------------------------------------------------------------------------- structured prompt, Answer round trip


def test_prompt_parts_are_the_rendered_prompt_in_pieces(hits, images):
    prompt = build_prompt("When?", number_sources(hits), question_image=images["small"])
    parts = prompt.to_parts()
    assert [p for p in parts if "image" in p] == [{"image": str(images["big"]), "n": 2}, {"image": str(images["small"])}]
    assert parts[0]["text"].startswith("### system\nYou answer questions")
    rebuilt = "".join(p["text"] if "text" in p else f"<{'image [2]' if 'n' in p else 'question image'}: {p['image']}>\n"
                      for p in parts)
    assert rebuilt == prompt.render()


def test_answer_round_trips_through_its_dict(hits, images):
    engine = RagQueryEngine(FakeRetriever(hits))
    answer = engine.ask("When?", image=images["small"])
    data = answer.to_dict()
    assert data["prompt_parts"] == build_prompt("When?", answer.sources, question_image=images["small"]).to_parts()
    back = Answer.from_dict(json.loads(json.dumps(data)))
    assert back.to_dict() == data
    assert [(s.n, s.node_id) for s in back.sources] == [(1, "t1"), (2, "i1"), (3, "t2")]
    assert str(back) == answer.prompt
