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


def pooled_by_length(primary, inputs: dict, *, batch_size: int = 512) -> np.ndarray:
    """:func:`pooled_of_inputs` of ``inputs``, the rows run in groups of ``batch_size`` of
    similar length (:func:`primary.examples.length_groups`), each group only as wide as its
    longest row: the same vectors (up to float rounding) for a fraction of the work when
    most rows are short. Each group width compiles once."""
    from primary.examples import length_groups

    if batch_size <= 0:
        raise ValueError(f"harvest batch size must be positive, got {batch_size}")
    lengths = (~np.asarray(inputs["key_padding_mask"])).sum(1)
    out = np.zeros((len(lengths), 0), np.float32)
    for width, pos in length_groups(lengths, batch_size):
        part = {k: np.asarray(inputs[k])[pos] for k in MODEL_INPUTS}
        part["tokens"] = part["tokens"][:, :width]
        part["key_padding_mask"] = part["key_padding_mask"][:, :width]
        # Every call one shape per width: a short last group is padded to the batch.
        part = pad_batch(dict(part, weight=np.ones(len(pos), np.float32)), batch_size)
        vectors = pooled_of_inputs(primary, part, batch_size=batch_size)[:len(pos)]
        if out.shape[1] == 0:
            out = np.zeros((len(lengths), vectors.shape[1]), np.float32)
        out[pos] = vectors
    if not len(lengths):
        return np.zeros((0, primary.config.hidden_dim), np.float32)
    return out


def pooled_of_partial_builds(primary, partial, vocab, weapon_vocab, *,
                             batch_size: int = 512) -> np.ndarray:
    """``(m, hidden)`` pooled vectors of :class:`~primary.partial_builds.PartialBuilds`
    (:func:`pooled_by_length`)."""
    from primary.build_inputs import token_inputs

    inputs = token_inputs(partial.tokens, partial.weapons, vocab, weapon_vocab,
                          where="partial builds")
    return pooled_by_length(primary, inputs, batch_size=batch_size)


def harvest_array(primary, examples, batch_size: int) -> np.ndarray:
    """``Float[ndarray, "n hidden"]``: pooled vectors of every example of an ``Examples``
    set, in example order (see :func:`pooled_of_inputs`)."""
    inputs = {"tokens": examples.tokens, "weapons": examples.weapons,
              "key_padding_mask": examples.tokens == examples.pad_id}
    return pooled_of_inputs(primary, inputs, batch_size=batch_size)
