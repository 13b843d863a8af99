"""The AP rungs as absorption concepts: every standard ability's rungs, nested, one family
per ability, measured on the analysis builds."""

import numpy as np

from apps.analysis.rung_absorption import rung_conditions
from primary.conditions import condition_matrix
from primary.synthetic import generate_builds
from primary.vocab import AP_THRESHOLDS, STANDARD_ABILITIES


def test_every_standard_ability_rung_in_order_and_nested():
    rungs = rung_conditions()
    assert len(rungs) == len(STANDARD_ABILITIES) * len(AP_THRESHOLDS)
    assert [c.name for c in rungs[:2]] == ["ink_recovery_up>=3", "ink_recovery_up>=6"]
    labels = condition_matrix(generate_builds(500, seed=1), rungs)
    for i, (low, high) in enumerate(zip(rungs, rungs[1:])):
        if low.ability == high.ability:  # >= 12 implies >= 6
            assert not (labels[:, i + 1] & ~labels[:, i]).any(), high.name
    assert labels[:, 0].any() and not labels.all()
    assert np.all(labels.sum(0)[[c.threshold == 3 for c in rungs]] > 0)
