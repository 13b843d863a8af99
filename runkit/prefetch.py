"""Items made in a worker thread one step ahead of their use.

A training loop that reads its data on the host (harvest blocks, rows of an activations
file) makes the next item while the device works on the current one, so the device
never waits for the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Made = TypeVar("Made")


def made_ahead(make: Callable[[Item], Made], items: Sequence[Item]) -> Iterator[Made]:
    """``make(item)`` for each of ``items`` in order, the next one made in a worker thread
    while the caller uses the one before. Closing the iterator early waits for the item
    being made."""
    if not len(items):
        return
    with ThreadPoolExecutor(max_workers=1) as worker:
        upcoming = worker.submit(make, items[0])
        for i in range(len(items)):
            current = upcoming.result()
            upcoming = worker.submit(make, items[i + 1]) if i + 1 < len(items) else None
            yield current
