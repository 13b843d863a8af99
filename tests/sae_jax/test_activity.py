"""The one-pass firing and active counts a training step takes from its activations."""

import jax
import numpy as np
import pytest

from sae_jax.activity import ACTIVE_THRESHOLD, firing_counts


def _activations(rows, features, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.choice([0.0, ACTIVE_THRESHOLD / 2, ACTIVE_THRESHOLD, 0.5, 3.0], size=(rows, features),
                   p=[0.5, 0.1, 0.1, 0.2, 0.1]).astype(np.float32)
    h[:, 0] = 0.0  # a dead feature
    h[:, 1] = 1.0  # a feature active on every row
    return h


@pytest.mark.parametrize("rows", [1, 37, 1024, 65_535, 65_536 + 3])
def test_counts_match_two_separate_sums(rows):
    h = _activations(rows, 5)
    fired, active = jax.jit(firing_counts)(h)
    np.testing.assert_array_equal(np.asarray(fired), np.sum(h > 0, axis=0))
    np.testing.assert_array_equal(np.asarray(active), np.sum(h > ACTIVE_THRESHOLD, axis=0))
    assert fired[1] == rows and active[1] == rows and fired[0] == 0


def test_dust_fires_but_is_not_active():
    h = np.full((4, 1), ACTIVE_THRESHOLD / 2, np.float32)
    fired, active = firing_counts(h)
    assert int(fired[0]) == 4 and int(active[0]) == 0
