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


def test_the_printed_line_gives_the_figures_and_the_seconds_they_took():
    from apps.analysis.pipeline import absorption_line

    summary = {"concepts": 126, "measured": 40, "few_builds": 80, "weak_probe": 6,
               "mean_absorption_fraction": 0.1234, "mean_full_absorption": 0.0456,
               "split_share": 0.25}
    line = absorption_line(summary, 2.46)
    assert line == ("absorption on the AP rungs: 40 of 126 rungs measured; mean absorption "
                    "fraction 0.123, fully absorbed 4.6%, split 25% (2.5s)")
    assert absorption_line(summary).endswith("split 25%")
    none = absorption_line({**summary, "measured": 0}, 0.04)
    assert none == ("absorption: no AP rung measured (80 with too few builds, 6 the "
                    "input barely encodes) (0.0s)")
