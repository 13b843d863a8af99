"""Where the SAE loop's chunks start and end, worked out on the host before any work.

The loop runs primary batches in chunks (:mod:`apps.training.chunk`), each one jitted
call. Everything that needs the host falls on a chunk's last batch or is read
back afterwards: a chunk ends at the end of its harvest block, where SAE training
starts (once the buffer holds ``min_buffer`` rows), at every checkpoint and at a
requested stop. Metrics lines need no boundary: the chunk returns every batch's
metrics and the host writes the lines whose step crossed ``log_every``.

The SAE step count after each batch is a pure function of the batch index, as
every batch is full: batch ``g`` trains once ``min(rows seen, buffer_size)``
reaches ``min_buffer``, and each training batch adds ``steps_per_batch`` steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


def crossed(prev: int, now: int, every: int) -> bool:
    """Whether going from step ``prev`` to ``now`` passes a multiple of ``every``."""
    return every > 0 and now // every > prev // every


@dataclass(frozen=True)
class Chunk:
    """Global batches ``first`` to ``end - 1``; ``train``: SAE steps follow each push;
    ``log_at``: batches after which a metrics line is due; ``checkpoint``: save after the
    last one; ``stop``: the run stops after it."""

    first: int
    end: int
    train: bool
    log_at: tuple[int, ...]
    checkpoint: bool
    stop: bool


@dataclass(frozen=True)
class LoopSchedule:
    total_batches: int
    batch_size: int
    buffer_size: int
    min_buffer: int
    steps_per_batch: int
    log_every: int
    checkpoint_every: int
    batches_per_block: int
    stop_after_steps: int | None = None

    def trains(self, g: int) -> bool:
        """Whether batch ``g`` (0-based) is followed by SAE steps."""
        return min((g + 1) * self.batch_size, self.buffer_size) >= self.min_buffer

    def first_training_batch(self) -> int:
        """The first batch that trains (``total_batches`` if none does)."""
        lo, hi = 0, self.total_batches
        while lo < hi:  # trains() is monotone in g
            mid = (lo + hi) // 2
            if self.trains(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def steps_after(self, g: int) -> int:
        """SAE steps done once batch ``g`` is through (``g = -1``: before any batch)."""
        return max(0, g - self.first_training_batch() + 1) * self.steps_per_batch

    def block_of(self, g: int) -> tuple[int, int]:
        """``(first, end)`` of the harvest block holding batch ``g``."""
        first = g - g % self.batches_per_block
        return first, min(first + self.batches_per_block, self.total_batches)

    def chunks(self, start: int) -> Iterator[Chunk]:
        """The chunks from global batch ``start`` to the end of the run or the stop."""
        first_train = self.first_training_batch()
        a = start
        while a < self.total_batches:
            block_end = self.block_of(a)[1]
            train = a >= first_train
            logs, checkpoint, stop = [], False, False
            g = a
            while g < block_end and (g >= first_train) == train:
                prev, step = self.steps_after(g - 1), self.steps_after(g)
                final = g + 1 == self.total_batches
                advanced = step != prev
                stop = (self.stop_after_steps is not None and advanced
                        and step >= self.stop_after_steps)
                if train and (advanced or final) and (
                        crossed(prev, step, self.log_every) or final or stop):
                    logs.append(g)
                checkpoint = step > 0 and (advanced or final) and (
                    crossed(prev, step, self.checkpoint_every) or final or stop)
                g += 1
                if checkpoint or stop:
                    break
            yield Chunk(a, g, train, tuple(logs), checkpoint, stop)
            if stop:
                return
            a = g
