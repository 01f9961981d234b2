"""Work run beside the calling thread: hashing, FFTs, soxr and libsndfile all release the GIL.

Processing one upload uses at most two extra threads at a time (the SHA-256 of the upload
and a compressed file's decoder reading ahead, while the main thread converts; then
loudness while the main thread runs the VAD), each started for the call and joined before
it returns: nothing is shared between calls, and on a single core it all still runs,
merely not overlapped.

Only work that spends its time in C with the GIL released goes there, in few large
calls: a thread that needs the GIL back while the other holds it waits for the
interpreter's switch interval (5 ms). That is why a decoder reads ahead from a file
descriptor, never from a Python file object: libsndfile would call back into Python (for
the GIL) thousands of times a minute, and the read-ahead was then slower than none.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["Background", "read_ahead"]


class Background(Generic[T]):
    """`function()` running in a thread of its own from now; `result()` joins it."""

    def __init__(self, function: Callable[[], T]) -> None:
        self._function = function
        self._results: list[T] = []
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="timbre-audio", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._results.append(self._function())
        except BaseException as error:  # re-raised in the caller's thread
            self._errors.append(error)

    def result(self) -> T:
        """The function's return value, or its exception raised here."""
        self._thread.join()
        if self._errors:
            raise self._errors[0]
        return self._results[0]


_ITEM, _END, _ERROR = 0, 1, 2
_PUT_POLL_S = 0.05


def read_ahead(items: Generator[T, None, R], depth: int = 4) -> Generator[T, None, R]:
    """`items` run in a thread of its own, up to `depth` items ahead of the consumer.

    The same items, return value and exceptions as `items` itself. When the consumer stops
    early (an exception, or closing this generator), the producer is told to stop, closes
    `items` in its own thread, and is joined before this generator finishes closing.
    """
    channel: queue.Queue[tuple[int, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[int, object]) -> bool:
        while not stop.is_set():
            try:
                channel.put(entry, timeout=_PUT_POLL_S)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            while True:
                try:
                    item = next(items)
                except StopIteration as end:
                    put((_END, end.value))
                    return
                if not put((_ITEM, item)):
                    items.close()  # the consumer has gone
                    return
        except BaseException as error:  # re-raised in the consumer's thread
            put((_ERROR, error))

    producer = threading.Thread(target=produce, name="timbre-audio-read", daemon=True)
    producer.start()
    try:
        while True:
            kind, value = channel.get()
            if kind == _ITEM:
                yield value  # type: ignore[misc]
            elif kind == _END:
                return value  # type: ignore[return-value]
            else:
                assert isinstance(value, BaseException)
                raise value
    finally:
        stop.set()
        producer.join()
