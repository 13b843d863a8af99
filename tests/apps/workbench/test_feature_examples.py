"""A feature's examples across its activations (apps.workbench.activation_bands) and the
features that fire together with it (apps.workbench.cofiring)."""

import numpy as np
import pytest

from apps.workbench.activation_bands import activation_bands
from apps.workbench.cofiring import fires_together


def test_bands_split_the_active_builds_strongest_first_down_to_the_weakest():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(0.02, 3.0, 97), [0.005, 0.0, 0.011]])
    rows = rng.permutation(1000)[:100]
    bands = activation_bands(rows, values, bands=5, per_band=4)
    active = np.sort(values[values > 0.01])[::-1]  # 98 active (0.011 counts, 0.005 not)
    assert len(active) == 98 and len(bands) == 5
    assert [b["count"] for b in bands] == [20, 19, 20, 19, 20]
    assert sum(b["count"] for b in bands) == 98
    assert bands[0]["high"] == pytest.approx(active[0]) and bands[-1]["low"] == pytest.approx(0.011)
    assert bands[0]["top_percent"] == 0 and bands[-1]["bottom_percent"] == 100
    by_row = dict(zip(rows.tolist(), values.tolist()))
    for upper, lower in zip(bands, bands[1:]):
        assert upper["low"] >= lower["high"] and upper["bottom_percent"] == lower["top_percent"]
    for b in bands:
        assert len(b["examples"]) == 4
        got = [v for _, v in b["examples"]]
        assert got == sorted(got, reverse=True)
        assert all(b["low"] <= v <= b["high"] for v in got)
        assert all(by_row[r] == pytest.approx(v) for r, v in b["examples"])
        assert got[0] < b["high"] or b["count"] <= 4  # spread over the band, not its top


def test_few_builds_give_fewer_bands_and_none_fire_gives_none():
    bands = activation_bands(np.arange(6), np.array([0.5, 0.4, 0.3, 0.2, 0.1, 0.05]))
    assert len(bands) == 1 and bands[0]["count"] == 6 and len(bands[0]["examples"]) == 4
    assert len(activation_bands(np.arange(3), np.array([0.5, 0.4, 0.3]))[0]["examples"]) == 3
    assert activation_bands(np.arange(2), np.array([0.0, 0.001])) == []
    with pytest.raises(ValueError, match="same-length"):
        activation_bands(np.arange(3), np.ones(2))


def test_fires_together_ranks_by_jaccard_not_by_share():
    rng = np.random.default_rng(1)
    active = rng.random((500, 12)) < np.linspace(0.02, 0.6, 12)
    active[:, 1] = active[:, 0] & (rng.random(500) < 0.9)  # 1 follows 0
    active[:, 11] = True  # fires on everything: the largest share, a small Jaccard
    both = (active[:, 0:1] & active).sum(0)
    out = fires_together(both, active.sum(0), 0, top=5)
    union = (active[:, 0:1] | active).sum(0)
    jac = both / union
    jac[0] = 0
    expect = np.argsort(-jac, kind="stable")[:5]
    assert [g["feature"] for g in out] == expect.tolist()
    assert out[0]["feature"] == 1
    for g in out:
        f = g["feature"]
        assert g["jaccard"] == pytest.approx(jac[f])
        assert g["share"] == pytest.approx(both[f] / active[:, 0].sum())
        assert g["both"] == both[f]
    assert 11 not in [g["feature"] for g in out[:2]]
    assert fires_together(np.zeros(12), np.zeros(12), 3) == []


def test_fires_together_checks_its_inputs():
    with pytest.raises(ValueError, match="active count"):
        fires_together(np.array([3, 1]), np.array([4, 2]), 0)
    with pytest.raises(IndexError, match="outside"):
        fires_together(np.array([3, 1]), np.array([3, 2]), 2)
