"""Absorption and splitting: a planted absorbing latent and a planted split are found, a
row's absorption fraction is the hand-computed one, and roles read back per feature."""

import numpy as np
import pytest

from sae_jax.absorption import (
    ABSORBED_SHARE,
    MIN_ROWS,
    _RowEntries,
    absorption,
    absorption_roles,
    row_absorption,
)
from sae_jax.sparse_activations import collect


def _sparse(acts):
    acts = np.asarray(acts, np.float32)
    return collect([(acts[i:i + 64], np.ones(len(acts[i:i + 64]), bool))
                    for i in range(0, len(acts), 64)], acts.shape[1]).sort_by_value()


def _world(absorbed_share: float, seed: int = 0):
    """Ability "a" in three levels (rungs a>=1 and a>=2, nested) and concept "b" learnt as
    two latents, each on its own half of b's builds. Latent 0 is the main latent of a>=1,
    latent 2 that of a>=2; on a share ``absorbed_share`` of the a>=2 builds latent 0 is
    silent and latent 2 fires twice as strongly (its decoder points along both a
    directions): a>=2's latent absorbs a>=1 there."""
    rng = np.random.default_rng(seed)
    n, d = 4000, 6
    level = rng.choice(3, size=n, p=[0.4, 0.3, 0.3])
    b = rng.random(n) < 0.3
    b_half = rng.random(n) < 0.5
    absorbed = (level == 2) & (rng.random(n) < absorbed_share)
    b_dec = rng.normal(size=d).astype(np.float32)
    e = np.eye(d, dtype=np.float32)
    x = (b_dec + (level >= 1)[:, None] * e[0] + (level >= 2)[:, None] * e[1]
         + b[:, None] * e[2] + 0.1 * rng.normal(size=(n, d))).astype(np.float32)
    atoms = np.zeros((8, d), np.float32)
    atoms[0] = e[0]
    atoms[2] = (e[0] + e[1]) / np.sqrt(2)
    atoms[3] = atoms[4] = e[2]
    atoms[5], atoms[6], atoms[7] = e[3], e[4], e[5]  # noise latents
    acts = np.zeros((n, 8), np.float32)
    acts[:, 0] = np.where((level >= 1) & ~absorbed, 1.0, 0.0)
    acts[:, 2] = np.where(level >= 2, np.where(absorbed, 2.0, 1.0), 0.0)
    acts[:, 3] = np.where(b & b_half, 1.0, 0.0)
    acts[:, 4] = np.where(b & ~b_half, 1.0, 0.0)
    acts[:, 5:] = np.maximum(rng.normal(size=(n, 3)) - 1.0, 0.0)
    labels = np.stack([level >= 1, level >= 2, b], axis=1)
    doc = absorption(x, _sparse(acts), atoms, b_dec, labels, ["a>=1", "a>=2", "b"],
                     texts=["A >=1", "A >=2", "B"], families=["a", "a", "b"])
    return doc, absorbed, labels


@pytest.fixture(scope="module")
def planted():
    return _world(0.08)


def test_planted_absorbing_latent_is_found(planted):
    doc, absorbed, labels = planted
    a1 = doc["concepts"][0]
    assert a1["status"] == "measured" and a1["probe_f1"] > 0.95
    assert a1["main_latents"] == [0] and not a1["split"]
    # Every held-out (odd) positive is checked; the main latent is silent exactly on the
    # planted rows, and each of those is fully absorbed by latent 2.
    held = np.arange(len(absorbed)) % 2 == 1
    assert a1["checked"] == int((held & labels[:, 0]).sum()) and a1["left_out"] == 0
    planted_held = int((held & absorbed).sum())
    assert a1["full_absorption"] == pytest.approx(planted_held / a1["checked"])
    assert a1["mains_silent"] == pytest.approx(planted_held / a1["checked"])
    top = a1["absorbers"][0]
    assert top["feature"] == 2 and top["rows"] >= planted_held
    assert top["main_of"] == ["a>=2"]  # a main latent of a deeper rung of the same ability
    assert a1["absorption_fraction"] >= a1["full_absorption"]
    # a>=2 keeps its own latent everywhere: nothing absorbed.
    a2 = doc["concepts"][1]
    assert a2["main_latents"] == [2] and a2["full_absorption"] == 0
    assert doc["summary"]["family_absorber_share"] == 1.0


def test_without_planting_nothing_is_fully_absorbed():
    doc, absorbed, _ = _world(0.0)
    assert not absorbed.any()
    a1 = doc["concepts"][0]
    assert a1["main_latents"] == [0]
    assert a1["full_absorption"] == 0 and a1["mains_silent"] == 0
    assert doc["summary"]["mean_full_absorption"] == 0


def test_planted_split_needs_both_latents(planted):
    doc, _, _ = planted
    b = doc["concepts"][2]
    assert sorted(b["main_latents"]) == [3, 4] and b["split"]
    # k = 1 sees half of B, k = 2 all of it; k = 3 was fitted and gained too little.
    assert len(b["ksparse_f1"]) == 3
    assert b["ksparse_f1"][1] - b["ksparse_f1"][0] > 0.2
    assert b["ksparse_f1"][2] - b["ksparse_f1"][1] < 0.03
    assert doc["summary"]["split_share"] == pytest.approx(1 / 3)
    assert doc["summary"]["measured"] == 3


def test_row_fraction_matches_the_hand_computation():
    # Latent cosines with the probe: 0 is the main latent; 2 points too little along the
    # probe to absorb; 4 points against it.
    cos = np.array([0.9, 0.5, 0.05, 0.3, -0.5, 0.2, 0.25])
    rows = np.array([
        [1.0, 0, 0, 0, 0, 0, 0],      # main carries 0.9 of 1: nothing absorbed
        [0, 1.0, 4.0, 1.0, 1.0, 0, 0],  # main silent; 1 and 3 take 0.8, 1 alone 0.5
        [0.5, 1.0, 0, 0.5, 0, 0, 0],    # main 0.45; absorbers 0.65, capped at 1 - 0.45
        [0, 0.6, 0, 0.4, 0, 0, 0],      # main silent; 0.42 absorbed, top latent only 0.3
        [0, 0.2, 0, 0.5, 0, 0.5, 0.4],  # four absorbers; the top three take 0.35 < 0.4
    ], np.float32)
    entries = _RowEntries(_sparse(rows))
    out = row_absorption(entries, np.arange(5), np.ones(5), cos, np.array([0]))
    np.testing.assert_allclose(out["fraction"], [0.0, 1.0, 0.55 / (0.55 + 0.45), 1.0, 0.0],
                               rtol=1e-6)
    assert out["full"].tolist() == [False, True, False, False, False]
    assert out["silent"].tolist() == [False, True, False, True, True]
    assert out["absorber"].tolist() == [-1, 1, 1, 1, -1]
    assert ABSORBED_SHARE == 0.4  # the numbers above are chosen around it


def test_rare_concepts_are_left_out_and_counted():
    rng = np.random.default_rng(1)
    n = 400
    labels = np.zeros((n, 2), bool)
    labels[: 2 * MIN_ROWS - 2, 0] = True  # one half gets fewer than MIN_ROWS positives
    labels[:, 1] = rng.random(n) < 0.5
    x = rng.normal(size=(n, 3)).astype(np.float32) + labels[:, 1:] * 2.0
    acts = np.stack([labels[:, 1] * 1.0, rng.random(n)], axis=1)
    doc = absorption(x, _sparse(acts), np.eye(2, 3), np.zeros(3), labels, ["rare", "common"])
    rare, common = doc["concepts"]
    assert rare["status"] == "few builds" and "probe_f1" not in rare
    assert rare["positives"] == 2 * MIN_ROWS - 2
    assert common["status"] == "measured" and common["main_latents"] == [0]
    assert doc["summary"]["few_builds"] == 1 and doc["summary"]["measured"] == 1


def test_roles_name_what_a_feature_is(planted):
    doc, _, _ = planted
    main = absorption_roles(doc, 0)["main"]
    assert [m["concept"] for m in main] == ["a>=1"] and main[0]["absorbed_by"][0] == 2
    roles = absorption_roles(doc, 2)
    assert [m["concept"] for m in roles["main"]] == ["a>=2"]
    assert [a["concept"] for a in roles["absorbs"]] == ["a>=1"]
    assert roles["absorbs"][0]["checked"] == doc["concepts"][0]["checked"]
    split = absorption_roles(doc, 3)["main"][0]
    assert split["split_with"] == [4]
    assert absorption_roles(doc, 6) is None and absorption_roles(None, 0) is None


def test_only_the_first_rows_are_measured(monkeypatch):
    from sae_jax import absorption as module

    rng = np.random.default_rng(2)
    acts = np.maximum(rng.normal(size=(300, 5)), 0).astype(np.float32)
    sparse = _sparse(acts)
    head = module.first_rows(sparse, 120)
    np.testing.assert_array_equal(head.dense(), acts[:120])
    assert module.first_rows(sparse, 300) is sparse
    labels = (rng.random((300, 1)) < 0.5) & (np.arange(300) < 120)[:, None]
    labels[200:] = True  # past the cap: would change the counts if measured
    monkeypatch.setattr(module, "MAX_ROWS", 120)
    doc = absorption(acts[:, :3] + labels, sparse, np.eye(5, 3), np.zeros(3), labels, ["c"])
    assert doc["settings"]["num_rows"] == 120 and doc["settings"]["of_rows"] == 300
    assert doc["concepts"][0]["positives"] == int(labels[:120].sum())


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="names"):
        absorption(np.zeros((4, 2)), _sparse(np.zeros((4, 2))), np.eye(2), np.zeros(2),
                   np.zeros((4, 2), bool), ["only one"])
