"""Out-of-memory recovery by splitting a batch: a big call that does not fit runs as smaller ones.

Pure Python: torch is looked at only if the caller already imported it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

OomPredicate = Callable[[Exception], bool]


def is_out_of_memory(exc: Exception) -> bool:
    """True for an accelerator (or host) out-of-memory error from torch.

    ``torch.OutOfMemoryError`` (also ``torch.cuda.OutOfMemoryError``) is what
    CUDA raises; other backends and some kernels raise a plain ``RuntimeError``
    whose message says "out of memory".
    """
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_with_oom_split(
    fn: Callable[[Sequence[T]], Sequence[R]],
    items: Sequence[T],
    *,
    is_oom: OomPredicate = is_out_of_memory,
    on_oom: Callable[[Exception], None] | None = None,
) -> list[R | Exception]:
    """``fn(items)``, halving the list and retrying each half whenever it runs out of memory.

    Returns one entry per item, in order: ``fn``'s result for it, or the
    out-of-memory exception for an item that failed even alone. Any other
    exception propagates at once (a cancel, a bad input), whatever halves have
    already finished. ``on_oom(exc)`` runs after each out-of-memory failure,
    once the failed call's frames are released, so it can return cached
    memory to the device before the retry.
    """
    if not items:
        return []
    try:
        results = fn(items)
    except Exception as exc:
        if not is_oom(exc):
            raise
        # Dropping the traceback releases the failed call's frames, and the activations they
        # hold, before anything is retried; leaving the except block releases the rest.
        error = exc.with_traceback(None)
    else:
        if len(results) != len(items):
            raise ValueError(f"expected {len(items)} results, got {len(results)}")
        return [*results]
    if on_oom is not None:
        on_oom(error)
    if len(items) == 1:
        return [error]
    middle = (len(items) + 1) // 2
    return [
        *run_with_oom_split(fn, items[:middle], is_oom=is_oom, on_oom=on_oom),
        *run_with_oom_split(fn, items[middle:], is_oom=is_oom, on_oom=on_oom),
    ]
