"""When a feature counts as active, dead or dense: one definition for every number.

Evaluation (``l0``, ``dead_fraction``, ``dense_fraction``), the feature analysis
(frequency, ranking window) and the report all read these, so a feature that the
report calls dead is dead in the metrics too (on the same inputs).

- active: activation above :data:`ACTIVE_THRESHOLD` (the original's analysis test,
  ``|h| > 0.01``; activations are post-ReLU, so ``h > 0.01``). Smaller values are
  numerical dust that changes no prediction.
- dead: active on no input of the set.
- dense: active on :data:`MAX_FREQUENCY` (30%) of inputs or more.
- the original's interpretability window: ``MIN_FREQUENCY < frequency < MAX_FREQUENCY``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

ACTIVE_THRESHOLD = 0.01
MIN_FREQUENCY, MAX_FREQUENCY = 0.01, 0.30
# firing_counts: the active count in a word's high 16 bits, the firing count in the low.
_PACK_SHIFT = 16
_LOW_MASK = (1 << _PACK_SHIFT) - 1  # also the most rows the low half can count


def is_active(h):
    """Boolean mask of active entries of post-ReLU activations ``h`` (numpy or jax)."""
    return h > ACTIVE_THRESHOLD


def firing_counts(h) -> tuple:
    """Per feature of ``h (rows, F)``: how many rows fire (``h > 0``, the usage EMA's
    test) and how many are active (:func:`is_active`), ``(fired, active)`` uint32 ``(F,)``.

    One pass over ``h`` gives both: each entry adds ``[h > 0] + ([active] << 16)`` to a
    uint32 column sum, so the two counts share a word (exact up to 65,535 rows; a taller
    ``h`` is counted in two passes). Two separate sums cost a training step two full
    passes over the ``(batch, d_sae)`` activations."""
    fired, active = h > 0, is_active(h)
    if h.shape[0] > _LOW_MASK:
        return (jnp.sum(fired, axis=0, dtype=jnp.uint32),
                jnp.sum(active, axis=0, dtype=jnp.uint32))
    packed = jnp.sum(fired.astype(jnp.uint32) + (active.astype(jnp.uint32) << _PACK_SHIFT),
                     axis=0, dtype=jnp.uint32)
    return packed & _LOW_MASK, packed >> _PACK_SHIFT


def dead_mask(frequency: np.ndarray) -> np.ndarray:
    return np.asarray(frequency) == 0


def dense_mask(frequency: np.ndarray) -> np.ndarray:
    return np.asarray(frequency) >= MAX_FREQUENCY


def live_mask(frequency: np.ndarray) -> np.ndarray:
    """Features neither dead nor dense (what co-activations are taken over)."""
    return ~dead_mask(frequency) & ~dense_mask(frequency)


def window_mask(frequency: np.ndarray, *, min_frequency: float = MIN_FREQUENCY,
                max_frequency: float = MAX_FREQUENCY) -> np.ndarray:
    f = np.asarray(frequency)
    return (f > min_frequency) & (f < max_frequency)
