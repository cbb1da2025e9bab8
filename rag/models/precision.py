"""Numeric precision of the embedding models' forward pass.

`RAG_PRECISION` (`Settings.precision`):

- `auto` (default): `bf16` on a CPU with native bfloat16 (AVX512-BF16 or AMX), else `fp32`.
- `fp32`: the reference forward pass.
- `bf16`: the forward pass under `torch.autocast(bfloat16)` (matmuls in bf16, reductions in
  fp32), Linear weights stored in bf16. Measured cosine to fp32 >= 0.9999 (real MiniLM on real
  text, CLIP ViT-B/32 shapes on real photos), 1.5-2x faster on CPUs with native bf16 (see
  docs/benchmarks.md); slower than fp32 on CPUs without it, hence `auto`.
- `int8`: dynamic int8 quantization of every Linear layer. Opt-in only and labelled (a
  warning at load, `precision_label`): about 1.8x faster but only ~0.95 cosine to fp32, so
  its vectors are not interchangeable with fp32/bf16 ones.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any

from rag.config import SPEC_BY_NAME
from rag.errors import ModelLoadError

logger = logging.getLogger(__name__)

PRECISIONS = SPEC_BY_NAME["precision"].choices  # declared once, in rag.config
# The agreement each precision keeps with the fp32 forward pass (cosine of the unit vectors),
# as measured in docs/benchmarks.md and asserted by tests/test_embedding_equivalence.py.
PRECISION_MIN_COSINE = {"fp32": 0.99999, "bf16": 0.999, "int8": None}
INT8_WARNING = (
    "precision int8 (dynamic int8 quantization) is an opt-in speed mode: about 1.8x faster on CPU "
    "but its vectors are only ~0.95 cosine-similar to the fp32 model's, so rankings change and an index "
    "built in another precision should not be mixed with it. Use RAG_PRECISION=auto (bf16 where the CPU "
    "has native bf16, else fp32) for results that match the reference model."
)


def native_bf16() -> bool:
    """Does this CPU compute bfloat16 natively (AVX512-BF16 or AMX)? Emulated bf16 is slower than fp32."""
    import torch

    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # pragma: no cover - private probes may change between torch releases
            continue
    return False


def resolve_precision(precision: str = "auto", device: str = "cpu") -> str:
    """`auto` -> `bf16` on a CPU with native bf16, else `fp32`; anything else is checked and passed on."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ModelLoadError(f"unknown RAG_PRECISION {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device == "cpu" and native_bf16() else "fp32"
    if precision == "int8" and device != "cpu":
        raise ModelLoadError(f"RAG_PRECISION=int8 (dynamic quantization) runs on the CPU only, but the device is {device!r}")
    return precision


def precision_label(precision: str) -> str:
    """How a precision is shown to users (`rag info`, logs): int8 says what it trades."""
    if precision == "int8":
        return "int8 (dynamic quantization: faster, ~0.95 cosine to fp32; opt-in)"
    if precision == "bf16":
        return "bf16 (autocast; >= 0.999 cosine to fp32)"
    return precision


def precision_context(precision: str, device: str = "cpu") -> Any:
    """The context a forward pass runs in: bf16 autocast, or nothing (fp32, int8)."""
    if precision == "bf16":
        import torch

        return torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cast_linear_bf16(module: Any) -> Any:
    """Store every Linear layer's weights in bfloat16, in place (for `bf16` precision).

    Under autocast a Linear layer casts its fp32 weights to bf16 on every call (the cast cache
    lives only as long as one autocast block): 22M-88M parameters re-cast per query. Casting
    them once gives the very same numbers (autocast makes the same cast) without that cost,
    and halves their memory. Embeddings and LayerNorms stay fp32. The forward pass must then
    run under `precision_context("bf16")`, as every model in `rag.models` does.

    The tensors left in fp32 are then copied out of the model file's memory map: while any of
    them points into it, the whole map stays mapped and every page the cast read stays
    resident (measured: 1,089 -> 629 MiB RSS for CLIP ViT-B/32).
    """
    import torch

    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.to(torch.bfloat16)
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.dtype != torch.bfloat16:
            tensor.data = tensor.data.clone()
    return module


def prepare_model(module: Any, precision: str) -> Any:
    """Apply a precision's one-time model change: bf16 Linear weights, or int8 quantization."""
    if precision == "bf16":
        return cast_linear_bf16(module)
    if precision == "int8":
        return quantize_int8(module)
    return module


def quantize_int8(module: Any) -> Any:
    """Dynamic int8 quantization of every Linear layer, in place (weights int8, activations quantized on the fly)."""
    import torch

    warnings.warn(INT8_WARNING, UserWarning, stacklevel=3)
    logger.warning(INT8_WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
