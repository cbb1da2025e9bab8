"""Batching helpers: fixed-size slices, and a bounded, ordered thread-pool map."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch(fn: Callable[[T], R], items: Iterable[T], workers: int = 2, ahead: int = 8) -> Iterator[R]:
    """`map(fn, items)` on a thread pool, in order, with at most `ahead` results waiting.

    Unlike `ThreadPoolExecutor.map`, which submits every item at once (and so would hold every
    decoded image of a large corpus in memory), this keeps a bounded window in flight.
    """
    ahead = max(1, ahead)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        window: deque = deque()
        iterator = iter(items)
        for item in iterator:
            window.append(pool.submit(fn, item))
            if len(window) >= ahead:
                break
        while window:
            result = window.popleft().result()
            for item in iterator:
                window.append(pool.submit(fn, item))
                break
            yield result


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """`items` in consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
