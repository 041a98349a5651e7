"""Ordered, bounded parallel map: the decode/preprocess stage that overlaps
inference in detect, eval, make-lmdb and quantize calibration.

Results come back in input order; at most `ahead` items are in flight, so
memory stays bounded whatever the input's length (images are never all
held). Threads suffice: image decoding (Pillow, numpy) and onnxruntime release
the GIL."""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Deque, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 2,
                ahead: Optional[int] = None) -> Iterator[R]:
    """Yield fn(item) for each item, in order, computing up to `ahead`
    (default 2 x workers) items ahead on `workers` threads. An exception
    raised by fn comes out at that item's turn; with workers <= 0 it runs
    inline (no thread), which keeps tracebacks simple when debugging."""
    if workers <= 0:
        for item in items:
            yield fn(item)
        return
    ahead = max(1, ahead if ahead is not None else 2 * workers)
    iterator = iter(items)
    pending: Deque[Future] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caffessd")
    finished = False
    try:
        for item in iterator:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
        finished = True
    finally:
        # Stopped early (the consumer broke off, an error, Ctrl-C): drop what has
        # not started and do not wait for what has. An abandoned generator may be
        # closed by the garbage collector, in whatever thread it runs in and while
        # that thread holds locks (threading's own among them) that a worker needs
        # to finish: joining the workers there can deadlock the process.
        pool.shutdown(wait=finished, cancel_futures=True)
