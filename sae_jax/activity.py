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

import numpy as np

ACTIVE_THRESHOLD = 0.01
MIN_FREQUENCY, MAX_FREQUENCY = 0.01, 0.30


def is_active(h):
    """Boolean mask of active entries of post-ReLU activations ``h`` (numpy or jax)."""
    return h > ACTIVE_THRESHOLD


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
