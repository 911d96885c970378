"""The one bridge from a thread to a generator: work runs on a thread of its own, its items are yielded here.

Owns running `work(put)` on its own thread and yielding each item it puts, in order, as it puts it; re-raising the
work's error on the consumer's side; stopping the work when the consumer closes the generator (its next `put`
raises `Stopped`); and snapshots on demand (`put.offer`): an item made on the work thread only when the consumer
is ready for one, so a consumer slower than the work holds at most one pending snapshot instead of a queue of
them, and spends at most a share of the time on them (`pace`). compare.py resolves variants through it (download
and conversion messages as they happen) and dashboard.py runs a whole comparison through it (a comparison holds
model locks across its steps, so it must run start to end on one thread, whichever worker thread gradio advances
the generator on). Knows nothing of runs.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")
_END = object()


class Stopped(Exception):
    """Raised by `put` inside the work once the consumer has closed the generator: nobody reads its items."""


class Feed(Generic[T]):
    """What the work gets as `put`: `put(item)` queues an item (every one is yielded, in order);
    `put.offer(make)` queues a snapshot `make()` only when the consumer is ready for one (see in_thread)."""

    def __init__(self, pace: float):
        self.cond = threading.Condition()
        self.items: deque = deque()  # [error, item, is_snapshot]
        self.stop = False
        self.pace = pace
        self.ready_at = 0.0  # the consumer takes the next snapshot from then on …
        self.queued: list | None = None  # … unless one is queued, not yet taken,
        self.handling = False  # … or taken and still being handled
        self.made = 0  # snapshots made (what a slow consumer saves shows here)

    def __call__(self, item: T) -> None:
        with self.cond:
            if self.stop:
                raise Stopped
            self.items.append([None, item, False])
            self.cond.notify()

    def offer(self, make: Callable[[], T], urgent: bool = False) -> bool:
        """Queue the snapshot make() (called here, on the work thread) if the consumer is ready for one: none
        queued or being handled, and the pause after the last one over; else make nothing and return False.

        `urgent` (a milestone: a variant's result, its first generated token) skips the pause and the wait for
        the one being handled, and takes the place of a snapshot still queued: never two pending either way."""
        with self.cond:
            if self.stop:
                raise Stopped
            if not urgent and (self.queued is not None or self.handling or time.monotonic() < self.ready_at):
                return False
        item = make()
        with self.cond:
            if self.queued is not None:
                self.queued[1] = item  # the newer snapshot holds everything the older one did
            else:
                self.queued = [None, item, True]
                self.items.append(self.queued)
                self.cond.notify()
            self.made += 1
        return True

    def _take(self) -> list:
        with self.cond:
            while not self.items:
                self.cond.wait()
            entry = self.items.popleft()
            if entry is self.queued:
                self.queued, self.handling = None, True
            return entry

    def _handled(self, seconds: float) -> None:
        with self.cond:
            self.handling, self.ready_at = False, time.monotonic() + self.pace * seconds

    def _end(self, error: object) -> None:
        with self.cond:
            self.items.append([error, None, False])
            self.cond.notify()


def in_thread(work: Callable[[Feed[T]], object], name: str = "pythia-compare-work",
              pace: float = 0.0) -> Iterator[T]:
    """Run work(put) on a thread of its own; yield each item it puts as it puts it; re-raise its error here.

    Closing the generator (the browser went away, a consumer stopped early) makes the work's next `put` raise
    Stopped, so the work unwinds (its `finally` blocks run) at its next item.

    `put.offer(make)` snapshots: the consumer is ready for the next one once it has handled the last one (the
    generator is advanced again) and then waited `pace` times as long as that took, so handling snapshots takes
    at most 1 / (1 + pace) of the consumer's time and a slow consumer never piles them up.
    """
    feed: Feed[T] = Feed(pace)

    def run() -> None:
        try:
            work(feed)
        except Stopped:
            pass
        except BaseException as e:  # handed to the consumer's thread below
            feed._end(e)
            return
        feed._end(_END)

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        while True:
            entry = feed._take()
            error, snapshot = entry[0], entry[2]
            if error is _END:
                return
            if error is not None:
                raise error
            taken = time.monotonic()
            yield entry.pop(1)  # held by the consumer only: a big item is freed as soon as it is done with it
            if snapshot:
                feed._handled(time.monotonic() - taken)
    finally:
        with feed.cond:
            feed.stop = True
