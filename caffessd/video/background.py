"""An iterator run on its own thread: the decode thread of the video pipeline.

`detect_many` pulls its inputs on the caller's thread; a video's frames come
from FFmpeg, so decoding there would stall inference. `background` moves the
iteration (decoding, colour conversion) to a thread that stays at most
`ahead` items in front, so memory stays flat whatever the video's length."""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")
_END = object()
_POLL = 0.1     # seconds between checks of `stop` while waiting


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def background(items: Iterable[T], ahead: int = 2, stop: Optional[threading.Event] = None,
               name: str = "caffessd-decode", linger: float = 2.0) -> Iterator[T]:
    """Yield the items of `items`, produced on a daemon thread. An exception
    raised there comes out here at its place. When `stop` is set, iteration
    ends at once (items already produced are dropped); when the consumer stops
    early, the producer is told to stop and its iterator closed on its own
    thread (a video's container is closed there). A producer blocked on a
    source that sends nothing (a stalled pipe) is waited for only `linger`
    seconds."""
    buffer: "queue.Queue" = queue.Queue(maxsize=max(1, ahead))
    consumer_gone = threading.Event()

    def put(item) -> bool:
        while not consumer_gone.is_set():
            try:
                buffer.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            if stop is not None and stop.is_set():
                return
            try:
                item = buffer.get(timeout=_POLL)
            except queue.Empty:
                continue
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        consumer_gone.set()
        thread.join(timeout=linger)
