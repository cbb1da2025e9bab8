"""A text encoder's forward pass as a traced TorchScript graph: the same numbers, less Python.

A query is one short sequence, so the encoders' own arithmetic is small and transformers'
Python around it (module calls, mask building, output objects) is a large share of it: on 2
fp32 CPU cores about 12 ms of BGE-small's 58 ms and 10 of CLIP's text tower's 70
(docs/benchmarks.md). `GraphForward` runs a model's eager forward pass for its first query and
traces it at the second (`torch.jit.trace`, once, about a second per model), so that one-shot
commands never pay for the trace (document batches do not count: an ingest never traces) and
long-lived processes (a server, a notebook, `rag eval`) stop paying for the Python.

A trace records the operations one example ran. It is taken on a padded batch of two, so that
the attention-mask path is the one recorded, and kept only if it gives the eager pass's numbers
on that batch, on one unpadded row of it, and on the live call's inputs (when a query led to
it); otherwise the eager pass stays, with a warning, as it does if the graph ever raises.
It is used on the CPU in fp32 only (bf16 autocast and int8 modules stay eager).

torch 2.13 marks `torch.jit.trace` deprecated (in favour of `torch.compile` and `torch.export`,
which need a compiler at run time or do not remove the Python); torch is pinned, and should a
later torch drop it, the trace fails and the eager pass stays, with a warning.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

EAGER_CALLS = 1  # calls that run eagerly before the trace: a one-shot command never traces
GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a graph may take, in this order

Inputs = Dict[str, Any]
RunEager = Callable[..., Any]  # run(model, **inputs) -> the output tensor


def graph_allowed(device: str, precision: str) -> bool:
    """Is tracing used for a model on `device` in `precision`? CPU fp32 only."""
    return str(device) == "cpu" and precision == "fp32"


def same_numbers(a: Any, b: Any) -> bool:
    """Do two outputs agree to float32 rounding?"""
    import torch

    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5))


def graph_key(inputs: Inputs) -> Tuple[str, ...]:
    """The graph inputs a call gives, in graph order (others make it run eagerly)."""
    return tuple(name for name in GRAPH_INPUTS if inputs.get(name) is not None)


def _traced_module(model: Any, run: RunEager, names: Sequence[str]) -> Any:
    import torch

    class Forward(torch.nn.Module):
        """`run(model, ...)` with positional tensors, as tracing wants (shares the model's weights)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return run(self.model, **dict(zip(names, tensors)))

    return Forward()


_TRACING = threading.Lock()  # one trace at a time in the process (the warning filter is process-wide)


def _unpadded_first_row(example: Inputs, key: Sequence[str]) -> Tuple[Any, ...]:
    """The example's first row alone, cut to its real length: a batch of one without padding."""
    length = int(example["attention_mask"][0].sum()) if "attention_mask" in example else example[key[0]].shape[1]
    return tuple(example[name][:1, :length] for name in key)


class GraphForward:
    """`model`'s forward pass (`run(model, **inputs)` -> tensor), traced after `EAGER_CALLS` counted calls.

    `example()` gives a padded batch of two (the tokenizer's output), on which the trace is
    taken. Only calls made with `count=True` (queries) lead to the trace, so a long ingest of
    many batches does not trace. Thread-safe: one thread traces while the others keep running
    eagerly. A graph that raises at run time is dropped and the call runs eagerly.
    """

    def __init__(self, model: Any, run: RunEager, example: Callable[[], Inputs], *, enabled: bool = True,
                 label: str = "model", eager_calls: int = EAGER_CALLS) -> None:
        self.model = model
        self.run = run
        self.example = example
        self.label = label
        self.eager_calls = eager_calls
        self.calls = 0
        self.state = "eager" if enabled else "off"  # eager -> graph, or -> failed
        self._graph: Any = None
        self._key: Tuple[str, ...] = ()
        self._lock = threading.Lock()

    def __call__(self, inputs: Inputs, count: bool = True) -> Any:
        """The output for these inputs: from the graph when it exists and fits them, else eager.

        `count`: this call is one of those after which the model is traced (a query's).
        """
        key = graph_key(inputs)
        only_graph_inputs = set(key) == {name for name, value in inputs.items() if value is not None}
        graph = self._graph
        if graph is not None and only_graph_inputs and key == self._key:
            try:
                return graph(*[inputs[name] for name in key])
            except Exception as exc:  # noqa: BLE001 - a shape the trace fixed, say: the eager pass answers
                self._fail(f"the traced graph raised {type(exc).__name__}: {exc}")
        output = self.run(self.model, **inputs)
        if count and self.state == "eager" and key and only_graph_inputs:
            self.calls += 1
            if self.calls > self.eager_calls:
                self.trace(live=(inputs, output))
        return output

    def trace(self, live: Optional[Tuple[Inputs, Any]] = None) -> bool:
        """Trace now (once); True when the graph is in use. `live`: inputs and eager output to check it on."""
        if self.state != "eager" or not self._lock.acquire(blocking=False):
            return self.state == "graph"
        try:
            if self.state == "eager":
                with _TRACING:
                    self._trace(live)
        finally:
            self._lock.release()
        return self.state == "graph"

    def _fail(self, why: str) -> None:
        self._graph, self.state = None, "failed"
        logger.warning("%s: running eagerly: %s", self.label, why)

    def _trace(self, live: Optional[Tuple[Inputs, Any]]) -> None:
        import torch

        example = self.example()
        key = graph_key(example)
        if not key or (live is not None and graph_key(live[0]) != key):
            return self._fail("its calls and its tokenizer give different inputs")
        tensors = tuple(example[name] for name in key)
        try:
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)  # about Python values it records
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")  # see above
                # tracing reads every module property, transformers' deprecated ones included
                warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
                graph = torch.jit.trace(_traced_module(self.model, self.run, key), tensors,
                                        strict=False, check_trace=False)
            # checked on the padded example, on one unpadded row, and on the live call
            checks = [tensors, _unpadded_first_row(example, key)]
            with torch.inference_mode():
                expected = [self.run(self.model, **dict(zip(key, args))) for args in checks]
                if live is not None:
                    checks.append(tuple(live[0][name] for name in key))
                    expected.append(live[1])
                same = all(same_numbers(graph(*args), want) for args, want in zip(checks, expected))
        except Exception as exc:  # noqa: BLE001 - any tracing failure leaves the eager pass
            return self._fail(f"tracing failed ({type(exc).__name__}: {exc})")
        if not same:
            return self._fail("the traced graph's numbers differ from the model's")
        self._graph, self._key, self.state = graph, key, "graph"
        logger.info("%s: forward pass traced (inputs %s)", self.label, ", ".join(key))
