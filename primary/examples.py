"""Training examples for the primary model, and batching by length bucket.

From each build with ``n`` tokens, ``num_instances`` examples each remove
``k`` tokens, ``k`` in ``1..max(1, n - 1)`` with ``P(k)`` proportional to
``k ** skew_factor``, positions uniform without replacement (the kept tokens
keep their order); with ``include_null`` one more example per build has the
input ``[<NULL>]``. The target is always the full build's token set
(multi-hot over the vocabulary), stored once per build and gathered per batch.

Batches are padded only to the smallest of :data:`LENGTH_BUCKETS` that fits,
so a jitted step compiles once per bucket. Training cuts each batch into parts of
similar length (:func:`split_by_length`, at row counts and widths fixed for the whole
run by :func:`part_layout`): the same rows and the same summed loss, with far fewer
padded positions (on the demo's examples a mean width of 5.9 positions against 16 for
whole batches and 10 for two equal parts). Harvesting goes further: it regroups the
rows of many batches by length (:func:`length_groups`), so its forward passes carry
almost no padding.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from primary.builds import BuildSet
from primary.vocab import (
    ABILITY_TOKENS,
    AP_THRESHOLDS,
    GEAR_PIECES,
    MAIN_AP,
    MAIN_ONLY_BY_PIECE,
    STANDARD_ABILITIES,
    SUB_AP,
    SUBS_PER_PIECE,
    Vocab,
    WeaponVocab,
    ap_to_token_multihot,
)

_CHUNK = 65_536


def max_build_tokens() -> int:
    """Most tokens any legal 57-AP build can have (dynamic programme over slot use)."""
    n_mains, n_subs = len(GEAR_PIECES), len(GEAR_PIECES) * SUBS_PER_PIECE
    best = {(0, 0): 0}  # (mains used, subs used) -> most tokens

    def step(options):
        nonlocal best
        nxt: dict[tuple[int, int], int] = {}
        for (m, s), t in best.items():
            for dm, ds, dt in options:
                key = (m + dm, s + ds)
                if key[0] <= n_mains and key[1] <= n_subs and nxt.get(key, -1) < t + dt:
                    nxt[key] = t + dt
        best = nxt

    for piece in GEAR_PIECES:  # at most one main-only ability per piece, one token each
        step([(0, 0, 0)] + ([(1, 0, 1)] if MAIN_ONLY_BY_PIECE[piece] else []))
    for _ in STANDARD_ABILITIES:
        step([(m, s, sum(MAIN_AP * m + SUB_AP * s >= t for t in AP_THRESHOLDS))
              for m, s in itertools.product(range(n_mains + 1), range(n_subs + 1))])
    return best[(n_mains, n_subs)]


MAX_BUILD_TOKENS = max_build_tokens()
# Examples made from each build by default, as primary training makes them; with the one
# empty input per build, empty inputs are one example in NUM_INSTANCES + 1.
NUM_INSTANCES = 5
LENGTH_BUCKETS: tuple[int, ...] = (4, 8, 12, 16)
if LENGTH_BUCKETS[-1] < MAX_BUILD_TOKENS:
    raise AssertionError(f"largest length bucket {LENGTH_BUCKETS[-1]} < {MAX_BUILD_TOKENS}")
# Harvesting groups rows of similar length (:func:`length_groups`): finer widths than the
# buckets, as most examples are short (a third have one token) and each width compiles
# the frozen forward once.
HARVEST_WIDTHS: tuple[int, ...] = (1, 2, 4, 6, 8, 12, 16)


@dataclass(frozen=True)
class Examples:
    """``m`` training examples drawn from ``n_builds`` builds.

    tokens: ``(m, L)`` int32 vocab ids, right-padded with ``pad_id``, L = largest bucket.
    lengths: ``(m,)`` int32 real tokens per example (>= 1).
    weapons: ``(m, 1)`` int32 weapon-vocab ids.
    build_index: ``(m,)`` int32 row of ``targets`` each example comes from.
    targets: ``(n_builds, V)`` bool multi-hot of each full build's tokens.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    weapons: np.ndarray
    build_index: np.ndarray
    targets: np.ndarray
    pad_id: int
    null_id: int

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def num_builds(self) -> int:
        return len(self.targets)

    @property
    def vocab_size(self) -> int:
        return self.targets.shape[1]


def split_builds(n: int, seed: int, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle ``range(n)`` and cut it into train / val / test index arrays (disjoint)."""
    fr = np.asarray(fractions, np.float64)
    if fr.shape != (3,) or (fr < 0).any() or abs(fr.sum() - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, "
                         f"got {fractions}")
    if n <= 0:
        raise ValueError(f"cannot split {n} builds")
    order = np.random.default_rng([int(seed), 0x5EED]).permutation(n)
    n_train = int(round(fr[0] * n))
    n_val = min(int(round(fr[1] * n)), n - n_train)
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]


def _ordered_token_ids(hot: np.ndarray, ability_ids: np.ndarray, pad_id: int, width: int):
    """``(n, 138)`` multi-hot -> ``(n, width)`` vocab ids in token order, and ``(n,)`` counts."""
    rows, cols = np.nonzero(hot)
    counts = hot.sum(1)
    starts = np.cumsum(counts) - counts
    out = np.full((len(hot), width), pad_id, np.int32)
    out[rows, np.arange(len(rows)) - starts[rows]] = ability_ids[cols]
    return out, counts.astype(np.int32)


def _removal_cdf(skew_factor: float, width: int) -> np.ndarray:
    """``(width + 1, width)``: row n is the CDF of k in 1..max(1, n - 1), P(k) ~ k**skew."""
    cdf = np.ones((width + 1, width))
    for n in range(width + 1):
        kmax = max(1, n - 1)
        p = np.arange(1, kmax + 1, dtype=np.float64) ** skew_factor
        cdf[n, :kmax] = np.cumsum(p) / p.sum()
    return cdf


def _removal_examples(rng, tok: np.ndarray, counts: np.ndarray, num_instances: int,
                      cdf: np.ndarray, pad_id: int, null_id: int):
    """Each build ``num_instances`` times with k tokens removed: ``(tokens, lengths, build)``."""
    n, width = tok.shape
    build = np.repeat(np.arange(n), num_instances)
    nb = counts[build]
    u = rng.random(len(build))
    k = (u[:, None] > cdf[nb]).sum(1) + 1
    # Remove the k positions with the smallest random keys among the real ones.
    keys = rng.random((len(build), width))
    col = np.arange(width)[None, :]
    keys[col >= nb[:, None]] = 2.0
    rank = keys.argsort(1).argsort(1)
    keep = (col < nb[:, None]) & (rank >= k[:, None])
    order = np.argsort(~keep, axis=1, kind="stable")  # kept positions first, in order
    out = np.take_along_axis(tok[build], order, axis=1)
    lengths = keep.sum(1).astype(np.int32)
    out[col >= lengths[:, None]] = pad_id
    # A one-token build loses its only token: it becomes a [<NULL>] example.
    empty = lengths == 0
    out[empty, 0] = null_id
    lengths[empty] = 1
    return out, lengths, build


def make_examples(builds: BuildSet, vocab: Vocab, weapon_vocab: WeaponVocab, *,
                  num_instances: int = NUM_INSTANCES, skew_factor: float = 1.2,
                  include_null: bool = True, seed: int = 0) -> Examples:
    """Training examples from ``builds`` (see the module docstring); deterministic per seed."""
    if len(builds) == 0:
        raise ValueError("make_examples: the BuildSet is empty")
    if num_instances < 0 or (num_instances == 0 and not include_null):
        raise ValueError(f"make_examples: num_instances={num_instances} with "
                         f"include_null={include_null} makes no examples")
    width = LENGTH_BUCKETS[-1]
    hot = ap_to_token_multihot(builds.ap)
    missing = hot & (vocab.ability_token_ids < 0)[None, :]
    if missing.any():
        r, c = np.argwhere(missing)[0]
        raise ValueError(f"token {ABILITY_TOKENS[c]!r} of build {r} is not in {vocab.source}")
    too_long = hot.sum(1) > width
    if too_long.any():
        r = int(np.flatnonzero(too_long)[0])
        raise ValueError(f"build {r} has {int(hot[r].sum())} tokens, more than the largest "
                         f"length bucket {width}: {builds.tokens(r)}")
    weapon_ids = weapon_vocab.encode_game_ids(builds.weapons, where="make_examples builds")
    weapon_vocab.check_ids(weapon_ids, where="make_examples weapons")
    tok, counts = _ordered_token_ids(hot, vocab.ability_token_ids, vocab.pad_id, width)
    # An empty build's token list is [<NULL>] (as tokenize_build gives).
    tok[counts == 0, 0] = vocab.null_id
    counts = np.maximum(counts, 1)
    vocab.check_ids(tok, where="make_examples tokens")
    targets = np.zeros((len(builds), len(vocab)), bool)
    rows = np.repeat(np.arange(len(builds)), width)
    real = (np.arange(width)[None, :] < counts[:, None]).ravel()
    targets[rows[real], tok.ravel()[real]] = True

    cdf = _removal_cdf(skew_factor, width)
    parts_tok, parts_len, parts_build = [], [], []
    for i, start in enumerate(range(0, len(builds), _CHUNK)):
        stop = min(start + _CHUNK, len(builds))
        rng = np.random.default_rng([int(seed), i])
        if num_instances:
            t, n_, b = _removal_examples(rng, tok[start:stop], counts[start:stop], num_instances,
                                         cdf, vocab.pad_id, vocab.null_id)
            parts_tok.append(t)
            parts_len.append(n_)
            parts_build.append(b + start)
        if include_null:
            t = np.full((stop - start, width), vocab.pad_id, np.int32)
            t[:, 0] = vocab.null_id
            parts_tok.append(t)
            parts_len.append(np.ones(stop - start, np.int32))
            parts_build.append(np.arange(start, stop))
    build_index = np.concatenate(parts_build).astype(np.int32)
    return Examples(
        tokens=np.concatenate(parts_tok).astype(np.int32),
        lengths=np.concatenate(parts_len).astype(np.int32),
        weapons=weapon_ids[build_index][:, None].astype(np.int32),
        build_index=build_index,
        targets=targets,
        pad_id=int(vocab.pad_id),
        null_id=int(vocab.null_id),
    )


def bucket_length(longest: int) -> int:
    """Smallest bucket in :data:`LENGTH_BUCKETS` that holds ``longest`` tokens."""
    for b in LENGTH_BUCKETS:
        if longest <= b:
            return b
    raise ValueError(f"{longest} tokens exceed the largest length bucket {LENGTH_BUCKETS[-1]}")


def harvest_width(longest: int) -> int:
    """Smallest of :data:`HARVEST_WIDTHS` that holds ``longest`` tokens."""
    for w in HARVEST_WIDTHS:
        if longest <= w:
            return w
    raise ValueError(f"{longest} tokens exceed the widest harvest group {HARVEST_WIDTHS[-1]}")


def length_groups(lengths: np.ndarray, group_rows: int) -> list[tuple[int, np.ndarray]]:
    """Rows cut into groups of similar length: ``[(width, positions)]``.

    The positions (into ``lengths``) are sorted by length and cut into runs of
    ``group_rows``; each run's width is the :func:`harvest_width` of its longest row, so
    a group carries at most the rounding of one width of padding per row, and every
    group but the last has exactly ``group_rows`` rows (the caller pads the last one).
    A pure function of ``lengths``: the same rows always fall into the same groups.
    """
    if group_rows <= 0:
        raise ValueError(f"group_rows must be positive, got {group_rows}")
    lengths = np.asarray(lengths)
    order = np.argsort(lengths, kind="stable")
    out = []
    for start in range(0, len(order), group_rows):
        pos = order[start:start + group_rows]
        out.append((harvest_width(int(lengths[pos[-1]])), pos))
    return out


# A training batch cut into parts by length: ``(rows, width)`` per part, shortest first.
PartLayout = tuple[tuple[int, int], ...]


def part_layout(ex: Examples, batch_size: int, parts: int, *, seed: int,
                epochs: Iterable[int], shuffle: bool = True, row_step: int = 1) -> PartLayout:
    """How :func:`split_by_length` cuts every full batch of these epochs: at most ``parts``
    parts, part ``p`` the next ``rows`` rows in order of length at ``width`` positions,
    the widest row any batch puts there. The cuts (at multiples of ``row_step``, so each
    part splits over the devices) are the ones that leave the fewest padded positions
    over the whole run. Fixed for the run, so the training step compiles once."""
    if parts <= 0 or row_step <= 0 or batch_size % row_step:
        raise ValueError(f"batch_size {batch_size} does not cut into parts of whole multiples "
                         f"of {row_step} rows (parts {parts})")
    count = num_batches(ex, batch_size)
    need = np.zeros(batch_size, np.int64)  # the longest row at each sorted position
    for epoch in epochs:
        order = epoch_order(ex, seed=seed, epoch=epoch, shuffle=shuffle)[:count * batch_size]
        lengths = np.sort(ex.lengths[order].reshape(count, batch_size), axis=1)
        need = np.maximum(need, lengths.max(axis=0))
    cuts = _fewest_padded_cuts(need, min(parts, batch_size // row_step), row_step)
    return tuple((b - a, max(1, int(need[b - 1]))) for a, b in zip(cuts, cuts[1:]))


def _fewest_padded_cuts(need: np.ndarray, parts: int, step: int) -> list[int]:
    """``[0, c1, ..., batch]``: at most ``parts`` runs of rows (cuts at multiples of
    ``step``) minimising the sum of run length x the run's widest ``need``."""
    n = len(need) // step
    best = {0: (0, [0])}  # rows cut so far (in steps) -> (padded positions, cuts)
    for _ in range(parts):
        nxt = dict(best)
        for i, (cost, cuts) in best.items():
            for j in range(i + 1, n + 1):
                c = cost + (j - i) * step * int(need[j * step - 1])
                if j not in nxt or c < nxt[j][0]:
                    nxt[j] = (c, cuts + [j * step])
        best = nxt
    return best[n][1]


def split_by_length(batch: dict, layout: PartLayout, pad_id: int) -> tuple[dict, ...]:
    """A batch's rows sorted by length (stable) and cut into the parts of ``layout``
    (:func:`part_layout`). Every row lands in exactly one part, so sums over the parts
    equal sums over the batch."""
    mask = np.asarray(batch["key_padding_mask"])
    lengths = (~mask).sum(axis=1)
    if sum(rows for rows, _ in layout) != len(lengths):
        raise ValueError(f"a batch of {len(lengths)} rows does not fit the part layout "
                         f"{layout}")
    order = np.argsort(lengths, kind="stable")
    out, start = [], 0
    for p, (rows, width) in enumerate(layout):
        idx = order[start:start + rows]
        start += rows
        if lengths[idx].max() > width:
            raise ValueError(f"part {p} of the batch holds a row of {lengths[idx].max()} "
                             f"tokens, more than its width {width}")
        part = {k: np.asarray(v)[idx] for k, v in batch.items()}
        keep = min(width, part["tokens"].shape[1])  # the columns past keep are padding
        part["tokens"] = part["tokens"][:, :keep]
        part["key_padding_mask"] = part["key_padding_mask"][:, :keep]
        out.append(pad_to_width(part, width, pad_id))
    return tuple(out)


def null_rows(ex: Examples, idx: np.ndarray) -> np.ndarray:
    """``(len(idx),)`` bool: which examples are the lone ``[<NULL>]`` input (whose pooled
    vector depends on the weapon alone)."""
    return (ex.lengths[idx] == 1) & (ex.tokens[idx, 0] == ex.null_id)


def model_rows(ex: Examples, idx: np.ndarray, width: int) -> dict[str, np.ndarray]:
    """The model inputs of examples ``idx`` at ``width`` token positions (each example must
    fit): ``tokens (n, width)``, ``weapons (n, 1)``, ``key_padding_mask (n, width)``."""
    longest = int(ex.lengths[idx].max()) if len(idx) else 0
    if longest > width:
        raise ValueError(f"an example of {longest} tokens does not fit width {width}")
    tokens = ex.tokens[idx, :width]
    return {"tokens": tokens, "weapons": ex.weapons[idx],
            "key_padding_mask": np.arange(width)[None, :] >= ex.lengths[idx][:, None]}


def epoch_order(ex: Examples, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The example order of one epoch (:func:`iterate_batches` takes its batches from it)."""
    return (np.random.default_rng([int(seed), int(epoch)]).permutation(len(ex)) if shuffle
            else np.arange(len(ex)))


def num_batches(ex: Examples, batch_size: int, drop_remainder: bool = True) -> int:
    """How many batches :func:`iterate_batches` yields per epoch."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return len(ex) // batch_size if drop_remainder else -(-len(ex) // batch_size)


def iterate_batches(ex: Examples, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True,
                    drop_remainder: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """Numpy batches of one epoch, shuffled deterministically in ``(seed, epoch)``.

    Each batch: ``tokens (B, Lb)`` int32 (Lb the smallest bucket that fits the
    batch), ``weapons (B, 1)`` int32, ``key_padding_mask (B, Lb)`` bool (True =
    pad), ``targets (B, V)`` float32, ``weight (B,)`` float32. With
    ``drop_remainder=False`` the last batch is filled up to B rows of weight 0
    whose input is a lone ``<NULL>`` (so no row is fully masked).
    """
    if len(ex) == 0:
        raise ValueError("iterate_batches: the Examples set is empty")
    count = num_batches(ex, batch_size, drop_remainder)
    if count == 0:
        raise ValueError(f"iterate_batches: {len(ex)} examples make no full batch of "
                         f"{batch_size} (pass drop_remainder=False to pad the last one)")
    order = epoch_order(ex, seed=seed, epoch=epoch, shuffle=shuffle)
    for i in range(count):
        idx = order[i * batch_size:(i + 1) * batch_size]
        real = len(idx)
        lb = bucket_length(int(ex.lengths[idx].max()))
        tokens = np.full((batch_size, lb), ex.pad_id, np.int32)
        tokens[:real] = ex.tokens[idx, :lb]
        tokens[real:, 0] = ex.null_id
        lengths = np.ones(batch_size, np.int32)
        lengths[:real] = ex.lengths[idx]
        weapons = np.zeros((batch_size, 1), np.int32)
        weapons[:real] = ex.weapons[idx]
        targets = np.zeros((batch_size, ex.vocab_size), np.float32)
        targets[:real] = ex.targets[ex.build_index[idx]]
        weight = np.zeros(batch_size, np.float32)
        weight[:real] = 1.0
        yield {
            "tokens": tokens,
            "weapons": weapons,
            "key_padding_mask": np.arange(lb)[None, :] >= lengths[:, None],
            "targets": targets,
            "weight": weight,
        }


def pad_to_width(batch: dict, width: int, pad_id: int) -> dict:
    """Right-pad ``tokens`` and ``key_padding_mask`` to ``width`` positions, so batches of
    every length bucket share one compiled shape (padding is masked: the result is equal)."""
    length = batch["tokens"].shape[1]
    if length == width:
        return batch
    if length > width:
        raise ValueError(f"batch has {length} token positions, more than the width {width}")
    extra = width - length
    out = dict(batch)
    out["tokens"] = np.pad(np.asarray(batch["tokens"]), ((0, 0), (0, extra)),
                           constant_values=pad_id)
    out["key_padding_mask"] = np.pad(np.asarray(batch["key_padding_mask"]), ((0, 0), (0, extra)),
                                     constant_values=True)
    return out
