"""The one bridge from a thread to a generator: work runs on a thread of its own, its items are yielded here.

Owns running `work(put)` on its own thread and yielding each item it puts, in order, as it puts it; re-raising the
work's error on the consumer's side; and stopping the work when the consumer closes the generator (its next `put`
raises `Stopped`). compare.py resolves variants through it (download and conversion messages as they happen) and
dashboard.py runs a whole comparison through it (a comparison holds model locks across its steps, so it must run
start to end on one thread, whichever worker thread gradio advances the generator on). Knows nothing of runs.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")
_END = object()


class Stopped(Exception):
    """Raised by `put` inside the work once the consumer has closed the generator: nobody reads its items."""


def in_thread(work: Callable[[Callable[[T], None]], object], name: str = "pythia-compare-work") -> Iterator[T]:
    """Run work(put) on a thread of its own; yield each item it puts as it puts it; re-raise its error here.

    Closing the generator (the browser went away, a consumer stopped early) makes the work's next `put` raise
    Stopped, so the work unwinds (its `finally` blocks run) at its next item.
    """
    items: queue.Queue = queue.Queue()
    stop = threading.Event()

    def put(item: T) -> None:
        if stop.is_set():
            raise Stopped
        items.put((None, item))

    def run() -> None:
        try:
            work(put)
        except Stopped:
            pass
        except BaseException as e:  # handed to the consumer's thread below
            items.put((e, None))
            return
        items.put((_END, None))

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        while True:
            error, item = items.get()
            if error is _END:
                return
            if error is not None:
                raise error
            yield item
    finally:
        stop.set()
