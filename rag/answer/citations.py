"""Citations: number the sources of an answer, find `[n]` in its text, map numbers to sources.

One reading of citations for everything that shows them (the engine's `cited` list, the
CLI, the notebook views): `[1]`, `[2][3]`, `[3, 1]`, `[2; 4]`, `[2-4]` (a range, at most 21
numbers), `[5–6]`, `[source 2]`, `[sources 1 and 3]`. Pure: imports only `rag.types`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from rag.types import Hit

_CITATION = re.compile(
    r"\[\s*(?:sources?\s*)?(\d+(?:\s*(?:,|;|-|–|and)\s*(?:sources?\s*)?\d+)*)\s*\]",
    re.IGNORECASE,
)
_MAX_RANGE = 20


@dataclass(frozen=True)
class Citation:
    """One bracketed citation: where it stands in the text and the numbers it names."""

    start: int
    end: int
    numbers: Tuple[int, ...]


def _numbers(body: str) -> List[int]:
    body = re.sub(r"(?i)sources?", "", body)
    out: List[int] = []
    for piece in re.split(r"\s*(?:,|;|and)\s*", body):
        bounds = [int(b) for b in re.split(r"\s*[-–]\s*", piece.strip()) if b.isdigit()]
        if len(bounds) == 2 and 0 <= bounds[1] - bounds[0] <= _MAX_RANGE:
            bounds = list(range(bounds[0], bounds[1] + 1))
        out.extend(n for n in bounds if n not in out)
    return out


def find_citations(text: str) -> List[Citation]:
    """Every bracketed citation in `text`, in order."""
    return [Citation(m.start(), m.end(), tuple(_numbers(m.group(1)))) for m in _CITATION.finditer(text or "")]


def citation_numbers(text: str) -> List[int]:
    """Every number cited as [n], [n, m], [n-m] or [source n], in order of first appearance."""
    found: List[int] = []
    for citation in find_citations(text):
        found.extend(n for n in citation.numbers if n not in found)
    return found


def parse_citations(text: str, sources: Sequence[Hit]) -> Tuple[List[Hit], List[int]]:
    """(cited sources ordered by number, cited numbers that match no source)."""
    by_n = {s.n: s for s in sources}
    numbers = citation_numbers(text)
    cited = sorted((by_n[n] for n in numbers if n in by_n), key=lambda s: s.n or 0)
    unknown = [n for n in numbers if n not in by_n]
    return cited, unknown


def number_sources(hits: Sequence[Hit]) -> List[Hit]:
    """Number hits 1..N in the order given (copies with `n` set), dropping repeats of a node."""
    out: List[Hit] = []
    seen: set = set()
    for hit in hits:
        key = hit.node_id or f"{hit.modality}:{hit.source}:{hit.image_path}:{hit.text}"
        if key in seen:
            continue
        seen.add(key)
        out.append(hit.numbered(len(out) + 1))
    return out
