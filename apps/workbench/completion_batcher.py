"""Concurrent build-lab requests completed together.

The completer takes many builds at once (:func:`apps.workbench.lab.complete_labs`: one beam
search for every completion a batch needs, plain and steered), so a request that waits a few
milliseconds for company costs little and saves much under load. :class:`CompletionBatcher`
keeps one worker thread: a batch closes ``window_s`` after its first request arrived, or after
the previous batch ended if that is later, or as soon as ``max_batch`` requests wait. While a
batch runs, new requests queue; when it ends, the window lets the clients it answered send
their next requests into the same batch as those queued (under steady load the batches fill
up rather than split in two). Requests reach it already checked
(:func:`apps.workbench.lab.lab_request`), so a bad field never fails a batch; should a batch
fail anyway, each of its requests is redone alone, and only the one that fails gets the
error.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from apps.workbench.lab import MAX_BATCH, LabRequest, complete_labs
from apps.workbench.run_state import RunData

# How long the first request of a batch waits for others (``apps.serve --batch_window_ms``):
# a few milliseconds against a completion of tens.
DEFAULT_WINDOW_MS = 5.0
MAX_WINDOW_MS = 1000.0


@dataclass
class _Waiting:
    req: LabRequest
    arrived: float
    answer: Future = field(default_factory=Future)


class CompletionBatcher:
    """Gathers lab requests into batches for ``complete`` (:func:`complete_labs`)."""

    def __init__(self, run: RunData, window_s: float, *, max_batch: int = MAX_BATCH,
                 complete=complete_labs):
        if not 0 < max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be 1..{MAX_BATCH}, got {max_batch}")
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0, got {window_s}")
        self.run = run
        self.window_s = window_s
        self.max_batch = max_batch
        self._complete = complete
        self._pending: list[_Waiting] = []
        self._wake = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._free_since = 0.0  # when the last batch ended
        self.batches = 0  # batches run, and the requests they held
        self.requests = 0

    def submit(self, req: LabRequest) -> Future:
        """Queue ``req``; the future holds its answer (or its error)."""
        waiting = _Waiting(req, time.monotonic())
        with self._wake:
            if self._closed:
                raise RuntimeError("the completion batcher is closed")
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, daemon=True,
                                                name="lab-completion-batcher")
                self._worker.start()
            self._pending.append(waiting)
            self._wake.notify()
        return waiting.answer

    async def complete(self, req: LabRequest) -> dict:
        """``req``'s answer, awaited without holding the event loop."""
        return await asyncio.wrap_future(self.submit(req))

    def close(self) -> None:
        """Stop the worker once the queued requests are answered."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            worker = self._worker
        if worker is not None:
            worker.join()

    def _next_batch(self) -> list[_Waiting]:
        """Wait until a batch is due (full, or its first request's window is over)."""
        with self._wake:
            while True:
                if len(self._pending) >= self.max_batch:
                    break
                if self._pending:
                    opened = max(self._pending[0].arrived, self._free_since)
                    left = opened + self.window_s - time.monotonic()
                    if left <= 0 or self._closed:
                        break
                    self._wake.wait(left)
                elif self._closed:
                    return []
                else:
                    self._wake.wait()
            batch, self._pending = (self._pending[:self.max_batch],
                                    self._pending[self.max_batch:])
            return batch

    def _work(self) -> None:
        while batch := self._next_batch():
            self.batches += 1
            self.requests += len(batch)
            self._run(batch)
            self._free_since = time.monotonic()

    def _run(self, batch: list[_Waiting]) -> None:
        try:
            answers = self._complete(self.run, [w.req for w in batch])
        except Exception as e:
            if len(batch) == 1:
                batch[0].answer.set_exception(e)
            else:  # each redone alone: the error reaches only the request it belongs to
                for w in batch:
                    self._answer_alone(w)
            return
        for w, answer in zip(batch, answers):
            w.answer.set_result(answer)

    def _answer_alone(self, waiting: _Waiting) -> None:
        try:
            waiting.answer.set_result(self._complete(self.run, [waiting.req])[0])
        except Exception as e:
            waiting.answer.set_exception(e)
