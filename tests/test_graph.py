"""The text encoders as traced graphs (rag.models.graph): the same vectors as the eager pass,
traced only from the second call, dropped (with a warning) when a trace would change numbers."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from rag.config import Settings, SettingsError
from rag.models.graph import GraphForward
from rag.models.image import load_image_embedding
from rag.models.text import load_text_embedding

QUERIES = [["what is the moon"], ["a rocket and a horse in space with the astronaut", "coffee"],
           ["the cat", "grace hopper was a compiler star and the photo of a red car " * 4, "hubble galaxy"]]
FP32 = dict(precision="fp32", text_query_instruction="Represent this sentence for searching relevant passages: ")


def text_pair(model_dir):
    base = Settings(text_model=str(model_dir), **FP32)
    return load_text_embedding(base), load_text_embedding(replace(base, text_graph="off"))


def clip_pair(model_dir):
    base = Settings(image_model=str(model_dir), **FP32)
    return load_image_embedding(base), load_image_embedding(replace(base, text_graph="off"))


def test_text_queries_and_passages_through_the_graph_equal_the_eager_vectors(tiny_models):
    graphed, eager = text_pair(tiny_models["text"])
    states = []
    for queries in QUERIES:
        got, want = graphed.get_query_embedding_batch(queries), eager.get_query_embedding_batch(queries)
        np.testing.assert_allclose(got, want, atol=1e-6)
        states.append(graphed._graph_forward.state)
    assert states == ["eager", "graph", "graph"]  # traced at the second call, used from then on
    assert eager._graph_forward is None
    passages = ["the moon " * 200, "a cup of coffee", "rockets carry astronauts"]  # long, padded batches too
    np.testing.assert_allclose(graphed.get_text_embedding_batch(passages), eager.get_text_embedding_batch(passages),
                               atol=1e-6)


def test_real_minilm_through_the_graph_equals_the_eager_vectors(minilm_dir):
    graphed, eager = text_pair(minilm_dir)
    for queries in QUERIES:
        np.testing.assert_allclose(graphed.get_query_embedding_batch(queries), eager.get_query_embedding_batch(queries),
                                   atol=1e-6)
    assert graphed._graph_forward.state == "graph"


def test_clip_text_through_the_graph_equals_the_eager_vectors(tiny_models):
    graphed, eager = clip_pair(tiny_models["image"])
    states = []
    for queries in QUERIES:
        np.testing.assert_allclose(graphed.embed_text_batch(queries), eager.embed_text_batch(queries), atol=1e-6)
        states.append(graphed._text_forward.state)
    assert states == ["eager", "graph", "graph"]
    assert eager._text_forward.state == "off"


def test_the_graph_shares_the_model_weights(tiny_models):
    graphed, _ = clip_pair(tiny_models["image"])
    assert graphed.trace_graph() is True
    model_storage = {p.data_ptr() for p in graphed._model.parameters()}
    graph_storage = {p.data_ptr() for p in graphed._text_forward._graph.parameters()}
    assert graph_storage and graph_storage <= model_storage  # no second copy of the weights


def test_one_call_never_traces(tiny_models):
    graphed, _ = text_pair(tiny_models["text"])
    graphed.get_query_embedding_batch(["one question"])
    assert graphed._graph_forward.state == "eager" and graphed._graph_forward._graph is None


def test_only_cpu_fp32_models_trace(tiny_models):
    bf16 = load_image_embedding(Settings(image_model=str(tiny_models["image"]), precision="bf16"))
    assert bf16.text_graph is False and bf16._text_forward.state == "off"
    assert bf16.trace_graph() is False


def test_other_calls_of_the_transformer_run_its_own_forward(tiny_models):
    graphed, _ = text_pair(tiny_models["text"])
    assert graphed.trace_graph() is True
    backbone = next(m.auto_model for m in graphed._model if hasattr(m, "auto_model"))
    ran = []
    graph = graphed._graph_forward._graph
    graphed._graph_forward._graph = lambda *args: ran.append("graph") or graph(*args)
    ids = torch.tensor([[1, 5, 2]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    out = backbone(**inputs, output_hidden_states=True)
    assert ran == [] and out.hidden_states is not None  # the model's own forward: every layer's states
    assert backbone(**inputs).hidden_states is None and ran == ["graph"]


def test_ingest_batches_do_not_trace_but_queries_do(tiny_models):
    graphed, _ = text_pair(tiny_models["text"])
    for _ in range(3):
        graphed.get_text_embedding_batch(["a passage about the moon", "another passage"])
    assert graphed._graph_forward.state == "eager" and graphed._graph_forward.calls == 0
    graphed.get_query_embedding_batch(["first question"])
    graphed.get_query_embedding_batch(["second question"])
    assert graphed._graph_forward.state == "graph"


def test_a_model_read_for_its_hidden_states_is_left_eager(tiny_models):
    from transformers import AutoConfig

    folder = tiny_models["text"]
    config = AutoConfig.from_pretrained(folder)
    assert not config.output_hidden_states
    model = load_text_embedding(Settings(text_model=str(folder), **FP32))
    backbone = next(m.auto_model for m in model._model if hasattr(m, "auto_model"))
    backbone.config.output_hidden_states = True
    from rag.models.text import install_graph

    assert install_graph(model._model, True) is None


def padded_example():
    return {"input_ids": torch.tensor([[5, 6, 7], [5, 6, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}


class Doubler(torch.nn.Module):
    def forward(self, input_ids, attention_mask):
        return input_ids.float() * 2 * attention_mask


def branchy(model, input_ids, attention_mask):
    """Takes a Python branch on the mask's values: a trace records only the branch it saw."""
    if bool(attention_mask.all()):
        return model(input_ids, attention_mask) + 1
    return model(input_ids, attention_mask)


def test_a_trace_that_would_change_the_numbers_is_dropped_with_a_warning(caplog):
    forward = GraphForward(Doubler(), branchy, padded_example, label="toy")
    live = {"input_ids": torch.tensor([[1, 2]]), "attention_mask": torch.tensor([[1, 1]])}
    assert forward(live).tolist() == [[3.0, 5.0]]
    with caplog.at_level(logging.WARNING, logger="rag.models.graph"):
        assert forward(live).tolist() == [[3.0, 5.0]]  # the second call traces, checks, and drops the trace
    assert forward.state == "failed" and forward._graph is None
    assert "toy: running eagerly: the traced graph's numbers differ from the model's" in caplog.text
    assert forward(live).tolist() == [[3.0, 5.0]]


def test_a_trace_that_fails_leaves_the_eager_pass(caplog):
    def untraceable(model, input_ids, attention_mask):
        return {"not": "a tensor"} if torch.jit.is_tracing() else model(input_ids, attention_mask)

    forward = GraphForward(Doubler(), untraceable, padded_example, label="toy")
    with caplog.at_level(logging.WARNING, logger="rag.models.graph"):
        assert forward.trace() is False
    assert forward.state == "failed" and "toy: running eagerly: tracing failed" in caplog.text
    assert forward(padded_example()).tolist() == [[10.0, 12.0, 14.0], [10.0, 12.0, 0.0]]


def test_a_graph_that_raises_at_run_time_gives_way_to_the_eager_pass(caplog):
    forward = GraphForward(Doubler(), lambda m, **kw: m(kw["input_ids"], kw["attention_mask"]), padded_example,
                           label="toy")
    assert forward.trace() is True

    def broken(*args):
        raise RuntimeError("shape fixed at trace time")

    forward._graph = broken
    with caplog.at_level(logging.WARNING, logger="rag.models.graph"):
        assert forward(padded_example()).tolist() == [[10.0, 12.0, 14.0], [10.0, 12.0, 0.0]]
    assert forward.state == "failed" and forward._graph is None
    assert "toy: running eagerly: the traced graph raised RuntimeError: shape fixed at trace time" in caplog.text


def test_a_graph_takes_only_the_inputs_it_was_traced_with():
    forward = GraphForward(Doubler(), lambda m, **kw: m(kw["input_ids"], kw["attention_mask"]), padded_example)
    assert forward.trace() is True
    calls = []
    forward.run = lambda m, **kw: calls.append(sorted(kw)) or m(kw["input_ids"], kw["attention_mask"])
    forward(padded_example())
    assert calls == []  # the graph ran
    forward({**padded_example(), "token_type_ids": torch.zeros(2, 3, dtype=torch.long)})
    assert calls == [["attention_mask", "input_ids", "token_type_ids"]]  # another input: the eager pass


def test_the_setting_takes_on_and_off_and_names_its_variable():
    assert Settings.from_env(environ={"RAG_TEXT_GRAPH": "0"}).text_graph == "off"
    assert Settings.from_env(environ={"RAG_TEXT_GRAPH": "yes"}).text_graph == "on"
    with pytest.raises(SettingsError, match="RAG_TEXT_GRAPH"):
        Settings.from_env(environ={"RAG_TEXT_GRAPH": "sometimes"})
