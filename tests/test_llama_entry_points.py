"""LlamaIndex habits on our index: as_retriever / as_query_engine, any BaseRetriever, Documents
through the ledger, callbacks and instrumentation, prompts, node postprocessors, and LlamaIndex's
own RetrieverQueryEngine / CitationQueryEngine over our retriever. No OpenAI, ever, unasked."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any, List, Optional

import pytest
from click.testing import CliRunner
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.llms import MockLLM
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts import PromptTemplate
from llama_index.core.schema import (
    Document,
    ImageDocument,
    ImageNode,
    NodeWithScore,
    QueryBundle,
    TextNode,
)

from conftest import FakeRetriever, photo
from rag.answer.engine import NO_LLM_MESSAGE, RagQueryEngine
from rag.answer.prompt import ANSWER_INSTRUCTION, SYSTEM_PROMPT
from rag.cli import main
from rag.errors import RagError
from rag.index.core import NO_DEFAULT_LLM
from rag.search.llama import RagRetriever
from rag.service import RagService
from rag.types import Hit


@pytest.fixture(autouse=True)
def no_global_llm(monkeypatch):
    """LlamaIndex's global Settings.llm unset (as on a fresh install), restored afterwards."""
    from llama_index.core import Settings as LlamaSettings

    monkeypatch.setattr(LlamaSettings, "_llm", None)


@pytest.fixture
def service(open_test_index, corpus):
    """A service over a fresh index holding the corpus: 3 articles (1 chunk each), 3 photos."""
    svc = RagService(index=open_test_index())
    report = svc.ingest([corpus])
    assert report.points == {"text": 3, "image": 3}
    return svc


class FixedRetriever(BaseRetriever):
    """A plain LlamaIndex retriever: one passage and one image, whatever the query."""

    def __init__(self, image_path: str) -> None:
        super().__init__()
        self.image_path = image_path
        self.queries: List[QueryBundle] = []

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        self.queries.append(query_bundle)
        return [
            NodeWithScore(node=TextNode(id_="p1", text="Cats purr.", metadata={"title": "Cat"}), score=0.9),
            NodeWithScore(node=ImageNode(id_="i1", image_path=self.image_path, text="a tabby",
                                         metadata={"title": "Chelsea"}), score=0.4),
        ]


class ChatMockLLM(MockLLM):
    """MockLLM as a chat model (LlamaIndex's multimodal synthesis asks for one)."""

    @property
    def metadata(self) -> Any:
        return super().metadata.model_copy(update={"is_chat_model": True})


class DropImages(BaseNodePostprocessor):
    """Keeps passages only."""

    def _postprocess_nodes(self, nodes: List[NodeWithScore], query_bundle: Optional[QueryBundle] = None):
        return [n for n in nodes if not isinstance(n.node, ImageNode)]


def fixed_hits() -> list[Hit]:
    return [
        Hit("text", 0.9, "t1", "a.md", title="A", text="Alpha passage."),
        Hit("image", 0.8, "i1", "b.png", title="B", text="a photo", image_path=str(photo("coffee.png"))),
        Hit("text", 0.3, "t2", "c.md", title="C", text="Gamma passage."),
    ]


# --------------------------------------------------------------------------- entry points

def test_as_retriever_is_a_llama_retriever_with_our_sizes_and_filters(service):
    retriever = service.as_retriever(top_k=2, image_top_k=1)
    assert isinstance(retriever, BaseRetriever)
    nodes = retriever.retrieve("a small domestic animal")
    assert sorted(type(n.node).__name__ for n in nodes) == ["ImageNode", "TextNode", "TextNode"]  # one fused list
    assert all(n.score is not None for n in nodes)
    only_cat = service.as_retriever(top_k=5, image_top_k=5, filters={"file_name": "cat.md"})
    assert [n.node.metadata["file_name"] for n in only_cat.retrieve("anything")] == ["cat.md"]
    image_query = service.as_retriever(top_k=2, image_top_k=2).retrieve(
        QueryBundle("", image_path=str(photo("chelsea.png"))))
    kinds = [type(n.node).__name__ for n in image_query]  # the pictures, and passages of their articles
    assert kinds[0] == "ImageNode" and kinds.count("ImageNode") == 2


def test_as_query_engine_without_llm_is_the_no_llm_mode(service):
    engine = service.as_query_engine(top_k=2, image_top_k=1)
    assert isinstance(engine, RagQueryEngine) and engine.llm is None
    response = engine.query("What does a cat do?")
    assert response.response == NO_LLM_MESSAGE
    assert [n.node.metadata["n"] for n in response.source_nodes] == [1, 2, 3]
    assert response.metadata["prompt"].startswith(f"### system\n{SYSTEM_PROMPT}\n")
    assert response.metadata["prompt"].count("] Passage from") == 2


def test_as_query_engine_with_an_llm_calls_it(service):
    engine = service.as_query_engine(llm=MockLLM(), top_k=1, image_top_k=0)
    response = engine.query("What does a cat do?")
    assert "Question: What does a cat do?" in response.response  # MockLLM echoes the prompt
    assert len(response.source_nodes) == 1


def test_llama_index_query_engine_without_llm_is_a_clear_error(service):
    llama_index = service.index.as_llama_index()
    with pytest.raises(RagError) as caught:
        llama_index.as_query_engine()
    assert str(caught.value) == NO_DEFAULT_LLM
    with pytest.raises(RagError, match="no llm given and LlamaIndex's Settings.llm is not set"):
        llama_index.as_chat_engine()
    assert type(llama_index.as_query_engine(llm=MockLLM())).__name__ == "SimpleMultiModalQueryEngine"


def test_llama_index_query_engine_uses_an_explicit_global_llm(service, monkeypatch):
    from llama_index.core import Settings as LlamaSettings

    mock = MockLLM()
    monkeypatch.setattr(LlamaSettings, "_llm", mock)
    engine = service.index.as_llama_index().as_query_engine()
    assert engine._multi_modal_llm is mock


def test_no_openai_object_is_built_by_any_entry_point(service, monkeypatch, corpus):
    import llama_index.llms.openai as openai_llms
    from llama_index.core import Settings as LlamaSettings
    from llama_index.core.query_engine import CitationQueryEngine, RetrieverQueryEngine

    def trap(self, *args, **kwargs):
        raise AssertionError("an OpenAI LLM was constructed")

    monkeypatch.setattr(openai_llms.OpenAI, "__init__", trap)
    with pytest.raises(AssertionError, match="constructed"):  # the trap is armed
        openai_llms.OpenAI(api_key="x")

    service.as_query_engine().query("cat")
    service.ask("cat")
    service.as_query_engine(streaming=True).query("cat")
    service.as_retriever().retrieve("cat")
    RagQueryEngine(FixedRetriever(str(photo("coffee.png")))).query("cat")
    llama_index = service.index.as_llama_index()
    with pytest.raises(RagError):
        llama_index.as_query_engine()
    llama_index.insert(Document(text="Tea is brewed from leaves.", id_="tea"))
    service.insert(Document(text="Milk is white.", id_="milk"))
    retriever = service.as_retriever(top_k=1, image_top_k=0)
    RetrieverQueryEngine.from_args(retriever, llm=MockLLM()).query("cat")
    CitationQueryEngine(retriever, llm=MockLLM()).query("cat")
    assert LlamaSettings._llm is None  # nothing resolved LlamaIndex's default LLM


# --------------------------------------------------------------------------- any retriever

def test_query_engine_accepts_a_plain_base_retriever():
    retriever = FixedRetriever(str(photo("coffee.png")))
    engine = RagQueryEngine(retriever)
    response = engine.query(QueryBundle("Why do cats purr?", image_path=str(photo("chelsea.png"))))
    assert retriever.queries[0].query_str == "Why do cats purr?"
    assert retriever.queries[0].image_path == str(photo("chelsea.png"))
    assert [(n.node.node_id, n.node.metadata["n"]) for n in response.source_nodes] == [("p1", 1), ("i1", 2)]
    coffee = photo("coffee.png")
    assert '[1] Passage from "Cat" (p1)\nCats purr.\n' in response.metadata["prompt"]
    assert f'[2] Image from "Chelsea" ({coffee})\nCaption: a tabby\n<image [2]: {coffee}>' in response.metadata["prompt"]
    with pytest.raises(RagError) as caught:
        engine.ask("q", filters={"title": "Cat"})
    assert str(caught.value) == ("filters cannot be passed through a FixedRetriever: "
                                 "give them to that retriever when you make it")


def test_query_engine_over_our_llama_retriever(service):
    engine = RagQueryEngine(service.as_retriever(top_k=1, image_top_k=1))
    answer = engine.ask("the moon")
    assert [s.modality for s in answer.sources] == ["text", "image"]
    assert [s.n for s in answer.sources] == [1, 2]


def test_query_engine_rejects_what_is_no_retriever():
    with pytest.raises(RagError) as caught:
        RagQueryEngine(object()).ask("q")
    assert str(caught.value) == ("a query engine needs a retriever: our Retriever or a LlamaIndex "
                                 "BaseRetriever, not object")


# --------------------------------------------------------------------------- documents

def test_simple_directory_reader_documents_give_the_points_of_rag_ingest(open_test_index, settings, corpus, tmp_path):
    from llama_index.core import SimpleDirectoryReader

    docs = SimpleDirectoryReader(str(corpus)).load_data()
    assert len(docs) == 6  # PNG/JPG load as plain Documents here (stock defect 1)
    by_documents = RagService(index=open_test_index())
    report = by_documents.ingest_documents(docs)
    assert (report.text_nodes, report.image_nodes, report.files_indexed) == (3, 3, 6)
    assert by_documents.index.counts() == {"text": 3, "image": 3}

    other = replace(settings, storage=tmp_path / "by-files")  # `rag ingest` of the folder, as a user runs it
    env = {"RAG_STORAGE": str(other.storage), "RAG_TEXT_MODEL": other.text_model,
           "RAG_IMAGE_MODEL": other.image_model, "RAG_STORE": other.store}
    result = CliRunner().invoke(main, ["ingest", str(corpus), "-q"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    by_files = open_test_index(other)
    assert by_files.counts() == by_documents.index.counts()
    assert sorted(by_files.ledger.files) == sorted(by_documents.index.ledger.files)

    again = by_documents.ingest(docs)  # ingest() takes documents too: nothing embedded twice
    assert (again.files_indexed, again.unchanged, again.text_nodes, again.image_nodes) == (0, 6, 0, 0)
    as_files = by_documents.ingest([corpus])  # the same files, keyed and hashed the same way
    assert (as_files.files_indexed, as_files.unchanged) == (0, 6)
    with pytest.raises(RagError, match=r"^ingest\(\) takes paths or LlamaIndex Documents, not both in one call$"):
        by_documents.ingest([corpus, docs[0]])


def test_a_changed_document_replaces_its_nodes(service):
    first = service.insert(Document(text="# Tea\n\nTea is brewed from leaves.", id_="tea"))
    assert (first.files_indexed, first.text_nodes, first.points) == (1, 1, {"text": 4, "image": 3})
    same = service.insert(Document(text="# Tea\n\nTea is brewed from leaves.", id_="tea"))
    assert (same.files_indexed, same.unchanged, same.text_nodes) == (0, 1, 0)
    changed = service.insert(Document(text="# Tea\n\nGreen tea is not fermented.", id_="tea",
                                      metadata={"topic": "drinks"}))
    assert (changed.files_indexed, changed.text_nodes, changed.points) == (1, 1, {"text": 4, "image": 3})
    hits = service.search("tea", top_k=5, image_top_k=0, filters={"topic": "drinks"}).hits
    assert [(h.title, h.text) for h in hits] == [("Tea", "Green tea is not fermented.")]
    assert service.index.ledger.files["document:tea"].nodes == 1


def test_image_documents_by_path_and_by_bytes_are_stored_as_images(open_test_index, settings):
    svc = RagService(index=open_test_index())
    data = photo("chelsea.png").read_bytes()
    docs = [
        ImageDocument(image_path=str(photo("coffee.png"))),
        ImageDocument(image=base64.b64encode(data).decode(), id_="cat-photo", metadata={"caption": "Chelsea"}),
        ImageDocument(id_="empty"),
        "not a document",
    ]
    report = svc.ingest_documents(docs)
    assert (report.image_nodes, report.text_nodes, report.points) == (2, 0, {"text": 0, "image": 2})
    assert report.skipped == [
        {"path": "document empty", "reason": "no image: give image_path or the image bytes"},
        {"path": "str", "reason": "not a LlamaIndex Document but str"},
    ]
    stored = settings.storage / "documents"
    assert [p.read_bytes() == data for p in stored.iterdir()] == [True]
    hits = svc.search(image=str(photo("chelsea.png")), top_k=0, image_top_k=2).hits
    paths = sorted(h.image_path for h in hits)
    assert paths == sorted([str(photo("coffee.png").resolve()), str(next(stored.iterdir()).resolve())])
    assert {h.text for h in hits} >= {"Chelsea"}
    again = svc.ingest_documents(docs[:2])
    assert (again.unchanged, again.image_nodes) == (2, 0)


def test_llama_index_insert_goes_through_the_ledger(service):
    llama_index = service.index.as_llama_index()
    llama_index.insert(Document(text="Milk is white.", id_="milk"))
    assert "document:milk" in service.index.ledger.files
    assert service.index.counts() == {"text": 4, "image": 3}
    with pytest.raises(RagError, match=r"^insert_nodes\(\) would bypass the ledger"):
        llama_index.insert_nodes([TextNode(text="x")])


# --------------------------------------------------------------------------- callbacks and spans

def test_callback_manager_records_query_retrieve_synthesize_and_llm(service):
    debug = LlamaDebugHandler()
    engine = service.as_query_engine(llm=MockLLM(), callback_manager=CallbackManager([debug]), top_k=1,
                                     image_top_k=1)
    engine.query("the moon")
    counts = {kind: len(debug.get_event_pairs(kind))
              for kind in (CBEventType.QUERY, CBEventType.RETRIEVE, CBEventType.SYNTHESIZE, CBEventType.LLM)}
    assert counts == {CBEventType.QUERY: 1, CBEventType.RETRIEVE: 1, CBEventType.SYNTHESIZE: 1, CBEventType.LLM: 1}
    retrieved = debug.get_event_pairs(CBEventType.RETRIEVE)[0][1].payload["nodes"]
    assert [type(n.node).__name__ for n in retrieved] == ["TextNode", "ImageNode"]

    debug.flush_event_logs()
    quiet = service.as_query_engine(callback_manager=CallbackManager([debug]))  # no LLM: no LLM event
    quiet.query("the moon")
    assert len(debug.get_event_pairs(CBEventType.SYNTHESIZE)) == 1
    assert debug.get_event_pairs(CBEventType.LLM) == []


def test_callback_manager_reaches_a_plain_retriever():
    debug = LlamaDebugHandler()
    engine = RagQueryEngine(FixedRetriever(str(photo("coffee.png"))), callback_manager=CallbackManager([debug]))
    engine.query("q")
    assert len(debug.get_event_pairs(CBEventType.RETRIEVE)) == 1


@pytest.fixture
def instrumentation():
    """Span ids and event names seen by the root LlamaIndex dispatcher during the test."""
    import llama_index.core.instrumentation as instrument
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler

    seen: dict = {"events": []}

    class Events(BaseEventHandler):
        def handle(self, event: Any, **kwargs: Any) -> None:
            seen["events"].append(event.class_name())

    root = instrument.get_dispatcher()
    spans, events = SimpleSpanHandler(), Events()
    root.add_span_handler(spans)
    root.add_event_handler(events)
    seen["spans"] = spans
    yield seen
    root.span_handlers.remove(spans)
    root.event_handlers.remove(events)


def span_names(handler) -> list:
    return [span.id_.rsplit("-", 5)[0] for span in handler.completed_spans]


def test_instrumentation_shows_retrieval_and_synthesis_spans(service, instrumentation):
    service.as_query_engine(llm=MockLLM(), top_k=1, image_top_k=1).query("the moon")
    names = span_names(instrumentation["spans"])
    for name in ("RagQueryEngine.query", "RagQueryEngine._query", "RagQueryEngine.retrieve_sources",
                 "RagQueryEngine.synthesize"):
        assert name in names, (name, names)
    events = instrumentation["events"]
    for name in ("QueryStartEvent", "RetrievalStartEvent", "RetrievalEndEvent", "SynthesizeStartEvent",
                 "LLMChatStartEvent", "LLMChatEndEvent", "SynthesizeEndEvent", "QueryEndEvent"):
        assert name in events, (name, events)
    assert events.index("RetrievalEndEvent") < events.index("SynthesizeStartEvent") < events.index("SynthesizeEndEvent")


def test_async_query_has_the_same_spans(service, instrumentation):
    import asyncio

    asyncio.run(service.as_query_engine(top_k=1, image_top_k=0).aquery("the moon"))
    names = span_names(instrumentation["spans"])
    assert {"RagQueryEngine.aquery", "RagQueryEngine._aquery", "RagQueryEngine.retrieve_sources",
            "RagQueryEngine.asynthesize"} <= set(names)


# --------------------------------------------------------------------------- prompts and postprocessors

def test_get_prompts_and_update_prompts_change_the_prompt():
    engine = RagQueryEngine(FakeRetriever(fixed_hits()))
    prompts = engine.get_prompts()
    assert sorted(prompts) == ["answer_instruction", "system_prompt"]
    assert prompts["system_prompt"].get_template() == SYSTEM_PROMPT
    assert prompts["answer_instruction"].get_template() == ANSWER_INSTRUCTION

    engine.update_prompts({"system_prompt": PromptTemplate("Be brief."),
                           "answer_instruction": PromptTemplate("Answer in {language}.").partial_format(
                               language="French")})
    prompt = engine.ask("q").prompt
    assert prompt.startswith("### system\nBe brief.\n\n### user\n")
    assert prompt.endswith("Question: q\n\nAnswer in French.\n")
    assert engine.get_prompts()["system_prompt"].get_template() == "Be brief."


def test_prompt_errors_are_clear():
    engine = RagQueryEngine(FakeRetriever(fixed_hits()))
    with pytest.raises(RagError) as caught:
        engine.update_prompts({"qa_template": PromptTemplate("x")})
    assert str(caught.value) == "unknown prompt 'qa_template': this engine has system_prompt, answer_instruction"
    engine.update_prompts({"system_prompt": PromptTemplate("Speak {language}.")})
    with pytest.raises(RagError) as caught:
        engine.ask("q")
    assert str(caught.value) == ("the prompt 'system_prompt' has a variable without a value ('language'): "
                                 "fill it with template.partial_format(...) before update_prompts()")


def test_node_postprocessors_run_before_numbering(service):
    engine = RagQueryEngine(FakeRetriever(fixed_hits()), node_postprocessors=[DropImages()])
    answer = engine.ask("q")
    assert [(s.node_id, s.n) for s in answer.sources] == [("t1", 1), ("t2", 2)]
    assert "Image from" not in answer.prompt

    cutoff = RagQueryEngine(FakeRetriever(fixed_hits()), node_postprocessors=[SimilarityPostprocessor(similarity_cutoff=0.5)])
    assert [(s.node_id, s.n) for s in cutoff.ask("q").sources] == [("t1", 1), ("i1", 2)]

    real = service.as_query_engine(top_k=3, image_top_k=3, node_postprocessors=[DropImages()])
    assert {s.modality for s in real.ask("the moon").sources} == {"text"}


# --------------------------------------------------------------------------- LlamaIndex's own engines

@pytest.mark.parametrize("multimodal", [False, True])
def test_retriever_query_engine_over_our_retriever(service, multimodal):
    from llama_index.core.query_engine import RetrieverQueryEngine

    retriever = service.as_retriever(top_k=2, image_top_k=1)
    expected = [n.node.node_id for n in retriever.retrieve("the moon")]
    llm = ChatMockLLM() if multimodal else MockLLM()  # multimodal synthesis needs a chat LLM
    engine = RetrieverQueryEngine.from_args(retriever, llm=llm, multimodal=multimodal)
    response = engine.query("the moon")
    assert [n.node.node_id for n in response.source_nodes] == expected
    assert "the moon" in str(response)  # MockLLM echoes its prompt, which holds the query


@pytest.mark.parametrize("multimodal", [False, True])
def test_citation_query_engine_over_our_retriever(service, multimodal):
    from llama_index.core.query_engine import CitationQueryEngine

    retriever = service.as_retriever(top_k=2, image_top_k=0)
    passages = [n.node.get_content().strip() for n in retriever.retrieve("the moon")]
    llm = ChatMockLLM() if multimodal else MockLLM()
    response = CitationQueryEngine(retriever, llm=llm, multimodal=multimodal).query("the moon")
    texts = [n.node.get_content() for n in response.source_nodes]
    assert [t.split("\n", 1)[0] for t in texts] == ["Source 1:", "Source 2:"]
    assert [t.split("\n", 1)[1].strip() for t in texts] == passages


def test_streaming_reports_synthesis_and_llm_once_the_stream_ends(service):
    debug = LlamaDebugHandler()
    engine = service.as_query_engine(llm=MockLLM(), callback_manager=CallbackManager([debug]), streaming=True,
                                     top_k=1, image_top_k=0)
    response = engine.query("the moon")
    assert [len(pair) for pair in debug.get_event_pairs(CBEventType.SYNTHESIZE)] == [1]  # started, not ended
    text = "".join(response.response_gen)
    assert "Question: the moon" in text
    assert [len(pair) for pair in debug.get_event_pairs(CBEventType.SYNTHESIZE)] == [2]
    llm_end = debug.get_event_pairs(CBEventType.LLM)[0][1]
    assert llm_end.payload["completion"] == text
