"""Which rows of an activations table are held out for evaluation, and the order in which
training reads the others, both drawn from a seed.

Rows are taken in pieces of :data:`PIECE_ROWS` consecutive rows, so that reading them
from disk is a few long reads rather than one per row, while the pieces come from all
over the table:

- :func:`hold_out`: ``count`` rows for evaluation: the pieces of the table in an order
  drawn with ``(seed, 1)``, taken until ``count`` rows are gathered (the last piece
  partly). The held-out rows are never trained on. :func:`evaluation_split` holds out
  ``--eval_rows`` rows, at most a tenth of the table.
- :class:`EpochOrder`: the training rows (every other row, numbered in table order)
  of each epoch: its full pieces in an order drawn with ``(seed, 2, epoch)``, then
  the short last piece, if any, as it is. The activation buffer mixes the pieces
  further: every SAE batch is drawn at random from all of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PIECE_ROWS = 256


@dataclass(frozen=True)
class RowSplit:
    """``num_rows`` rows, of which ``held_out`` (sorted table rows) are for evaluation."""

    num_rows: int
    held_out: np.ndarray

    @property
    def num_train(self) -> int:
        return self.num_rows - len(self.held_out)

    def table_rows(self, train_rows) -> np.ndarray:
        """The table rows of training rows ``train_rows`` (numbered 0..num_train-1 in table
        order, skipping the held-out ones)."""
        t = np.asarray(train_rows, np.int64)
        # Held-out row j has j held-out rows before it: it is the first table row after
        # training row held_out[j] - j - 1, so training row t skips those with
        # held_out[j] - j <= t.
        shifted = self.held_out - np.arange(len(self.held_out))
        return t + np.searchsorted(shifted, t, side="right")


def hold_out(num_rows: int, count: int, seed: int) -> RowSplit:
    """``count`` rows of ``num_rows`` for evaluation (see the module docstring)."""
    if not 0 <= count <= num_rows:
        raise ValueError(f"cannot hold out {count} of {num_rows} rows")
    pieces = -(-num_rows // PIECE_ROWS)
    order = np.random.default_rng([seed, 1]).permutation(pieces)
    lengths = np.minimum(PIECE_ROWS, num_rows - order * PIECE_ROWS)
    taken = int(np.searchsorted(np.cumsum(lengths), count)) + 1 if count else 0
    rows = np.concatenate([np.arange(p * PIECE_ROWS, p * PIECE_ROWS + n)
                           for p, n in zip(order[:taken], lengths[:taken])] or [[]])
    return RowSplit(num_rows, np.sort(rows[:count].astype(np.int64)))


def evaluation_split(num_rows: int, eval_rows: int, seed: int) -> RowSplit:
    """``min(eval_rows, num_rows // 10)`` rows held out (:func:`hold_out`); fewer than 10
    rows leave none to hold out, an error."""
    count = min(int(eval_rows), num_rows // 10)
    if count <= 0:
        raise ValueError(f"{num_rows} rows are too few: a tenth of them (at least one) is "
                         "held out for evaluation, the rest trained on")
    return hold_out(num_rows, count, seed)


class EpochOrder:
    """The training rows at positions ``start..stop-1`` of an epoch's order (see the module
    docstring); remembers the last epoch's piece order."""

    def __init__(self, num_train: int, seed: int):
        self.num_train, self.seed = int(num_train), int(seed)
        self._epoch, self._pieces = None, None

    def _order(self, epoch: int) -> np.ndarray:
        if self._epoch != epoch:
            full = self.num_train // PIECE_ROWS
            self._pieces = np.random.default_rng([self.seed, 2, epoch]).permutation(full)
            self._epoch = epoch
        return self._pieces

    def rows(self, epoch: int, start: int, stop: int) -> np.ndarray:
        if not 0 <= start <= stop <= self.num_train:
            raise ValueError(f"positions {start}..{stop} are outside the epoch's "
                             f"{self.num_train} training rows")
        pieces = self._order(epoch)
        pos = np.arange(start, stop, dtype=np.int64)
        slot = pos // PIECE_ROWS
        in_full = slot < len(pieces)
        # Past the full pieces (the short last one) a position is its own row.
        moved = pieces[np.minimum(slot, max(len(pieces) - 1, 0))] * PIECE_ROWS + pos % PIECE_ROWS
        return np.where(in_full, moved, pos) if len(pieces) else pos
