"""Harvesting the frozen primary model's pooled vectors (the SAE's input).

Training: :func:`make_harvest_fn` builds one jitted function that runs
``SetCompletionModel.pooled`` on a batch (inference: no dropout) and pushes the
vectors of the real rows (``weight > 0``) into the device-resident
:class:`~sae_jax.buffer.ActivationBuffer`. The buffer is donated and never
leaves the device; the function also returns a device flag saying whether the
harvested rows were all finite, so faults can be caught without a host sync.

Evaluation and analysis: :func:`pooled_of_inputs` (and :func:`harvest_array` for an
``Examples`` set) streams inputs through the model and returns the pooled vectors as
one host array; :func:`pooled_by_length` does the same with the rows regrouped by length
(most partial builds hold a few tokens), as :func:`pooled_of_partial_builds` does for
:class:`~primary.partial_builds.PartialBuilds`.
"""

from __future__ import annotations

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from runkit.progress import show_progress
from sae_jax.buffer import ActivationBuffer, push

MODEL_INPUTS = ("tokens", "weapons", "key_padding_mask")


def model_inputs(batch: dict, *, with_weight: bool = True) -> dict:
    """The arrays of a batch that the primary's forward needs (targets stay on the host)."""
    keys = MODEL_INPUTS + (("weight",) if with_weight else ())
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"batch lacks {missing}; it has {sorted(batch)}")
    return {k: batch[k] for k in keys}


def pooled_vectors(graphdef: nnx.GraphDef, primary_state: nnx.State, batch: dict) -> jax.Array:
    """``Float[Array, "b hidden"]``: the frozen primary's pooled vectors (call inside jit)."""
    model = nnx.merge(graphdef, primary_state)
    return model.pooled(batch["tokens"], batch["weapons"], batch["key_padding_mask"])


def _harvest(graphdef, primary_state, buffer: ActivationBuffer, batch: dict):
    x = pooled_vectors(graphdef, primary_state, batch)
    valid = batch["weight"] > 0
    # Only real rows count: padding rows are neither stored nor checked.
    finite = jnp.all(jnp.isfinite(x) | ~valid[:, None])
    return push(buffer, x, valid), finite


@lru_cache(maxsize=16)
def make_harvest_fn(graphdef: nnx.GraphDef):
    """``fn(primary_state, buffer, batch) -> (buffer, all_finite)``, jitted, buffer donated.

    ``batch``: ``tokens (B, L) int``, ``weapons (B, 1) int``, ``key_padding_mask (B, L) bool``,
    ``weight (B,)``; ``all_finite`` is a device bool scalar over the rows that were pushed.
    Cached per graphdef, so repeated runs of one model compile once.
    """
    return jax.jit(partial(_harvest, graphdef), donate_argnums=(1,))


@partial(jax.jit, static_argnums=0, donate_argnums=2)
def harvest_into_buffer(primary_graphdef: nnx.GraphDef, primary_state: nnx.State,
                        buffer: ActivationBuffer, batch: dict) -> ActivationBuffer:
    """One-off form of :func:`make_harvest_fn` (graphdef static): returns the new buffer."""
    return _harvest(primary_graphdef, primary_state, buffer, batch)[0]


@partial(jax.jit, static_argnums=0)
def _pooled_jit(graphdef, primary_state, batch):
    return pooled_vectors(graphdef, primary_state, batch)


def pad_batch(batch: dict, batch_size: int) -> dict:
    """Pad a short (last) batch to ``batch_size`` rows so every call has one shape.

    Padding rows copy row 0's inputs (a valid set, so attention never sees an all-padding
    row) and get ``weight`` 0.
    """
    n = len(batch["weight"])
    if n == batch_size:
        return batch
    if n > batch_size:
        raise ValueError(f"batch of {n} rows is larger than the batch size {batch_size}")
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        fill = np.zeros_like(v[:1]) if k == "weight" else v[:1]
        out[k] = np.concatenate([v, np.repeat(fill, batch_size - n, axis=0)], axis=0)
    return out


def pooled_of_inputs(primary, inputs: dict, *, batch_size: int = 512) -> np.ndarray:
    """``Float[ndarray, "n hidden"]``: pooled vectors of the rows of ``inputs`` (``tokens``
    and ``key_padding_mask`` ``(n, L)``, ``weapons`` ``(n, 1)``), in row order.

    The one host-side pooled-vector function: evaluation, analysis and the scripts all
    use it. Streams fixed-size batches (the last one padded) through the frozen model.
    """
    if batch_size <= 0:
        raise ValueError(f"harvest batch size must be positive, got {batch_size}")
    graphdef, state = nnx.split(primary)
    n = len(inputs["tokens"])
    out = []
    for start in show_progress(range(0, n, batch_size), desc="pooled vectors", unit="batch",
                               leave=False, disable=n <= batch_size):
        part = {k: np.asarray(inputs[k][start:start + batch_size]) for k in MODEL_INPUTS}
        m = len(part["tokens"])
        part["weight"] = np.ones(m, np.float32)
        # A set smaller than one batch runs at its own size rather than padded up to it.
        batch = pad_batch(part, batch_size) if n >= batch_size else part
        out.append(np.asarray(_pooled_jit(graphdef, state, model_inputs(
            batch, with_weight=False)))[:m])
    if not out:
        return np.zeros((0, primary.config.hidden_dim), np.float32)
    return np.concatenate(out).astype(np.float32)


# Widths partial builds are run at (each row at the first that holds it): most hold a few
# tokens, and each width compiles the forward once (about a second on a CPU), so two; the
# wide one is full builds' (bridge.causal), compiled already when the analysis runs.
PARTIAL_WIDTHS = (4, None)  # None: the most tokens a legal build holds


def pooled_by_length(primary, inputs: dict, *, pad_id: int, batch_size: int = 512,
                     widths=PARTIAL_WIDTHS) -> np.ndarray:
    """:func:`pooled_of_inputs` of ``inputs``, each row run at the first of ``widths``
    that holds its tokens (None: :func:`primary.examples.max_build_tokens`) in batches of
    ``batch_size`` rows (the last of each width padded; ``pad_id`` fills new columns):
    the same vectors, up to float rounding, for less work when most rows are short. Each
    width compiles once."""
    from primary.examples import max_build_tokens, pad_to_width

    if batch_size <= 0:
        raise ValueError(f"harvest batch size must be positive, got {batch_size}")
    mask = np.asarray(inputs["key_padding_mask"])
    lengths = (~mask).sum(1)
    widths = sorted({max_build_tokens() if w is None else int(w) for w in widths})
    widths[-1] = max(widths[-1], mask.shape[1])
    group = np.searchsorted(widths, lengths)
    out = np.zeros((len(lengths), primary.config.hidden_dim), np.float32)
    for g, width in enumerate(widths):
        rows = np.flatnonzero(group == g)
        for start in range(0, len(rows), batch_size):
            pos = rows[start:start + batch_size]
            part = {k: np.asarray(inputs[k])[pos] for k in MODEL_INPUTS}
            keep = min(width, mask.shape[1])  # the columns past keep are padding
            part["tokens"] = part["tokens"][:, :keep]
            part["key_padding_mask"] = part["key_padding_mask"][:, :keep]
            part = pad_to_width(part, width, pad_id)
            # One shape per width: a short batch is padded to the batch size.
            part = pad_batch(dict(part, weight=np.ones(len(pos), np.float32)), batch_size)
            out[pos] = pooled_of_inputs(primary, part, batch_size=batch_size)[:len(pos)]
    return out


def pooled_of_partial_builds(primary, partial, vocab, weapon_vocab, *,
                             batch_size: int = 512) -> np.ndarray:
    """``(m, hidden)`` pooled vectors of :class:`~primary.partial_builds.PartialBuilds`
    (:func:`pooled_by_length`), each distinct input run once (short partial builds and the
    empty input recur: a fifth of the analysis's rows)."""
    from primary.build_inputs import token_inputs

    key = np.concatenate([np.asarray(partial.weapons, np.int64)[:, None],
                          np.packbits(partial.tokens, axis=1).astype(np.int64)], axis=1)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    distinct = partial.subset(first)
    inputs = token_inputs(distinct.tokens, distinct.weapons, vocab, weapon_vocab,
                          where="partial builds")
    return pooled_by_length(primary, inputs, pad_id=vocab.pad_id,
                            batch_size=batch_size)[inverse.reshape(-1)]


def harvest_array(primary, examples, batch_size: int) -> np.ndarray:
    """``Float[ndarray, "n hidden"]``: pooled vectors of every example of an ``Examples``
    set, in example order (see :func:`pooled_of_inputs`)."""
    inputs = {"tokens": examples.tokens, "weapons": examples.weapons,
              "key_padding_mask": examples.tokens == examples.pad_id}
    return pooled_of_inputs(primary, inputs, batch_size=batch_size)
