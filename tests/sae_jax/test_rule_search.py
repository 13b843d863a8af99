"""Rule search over boolean conditions: planted rules are found exactly, scores are right."""

import numpy as np
import pytest

from sae_jax.rule_search import (
    ActiveMatrix,
    ExplainConfig,
    conjunction_mask,
    explain,
    rule_text,
    sentence,
    split_rows,
)

N, K = 4000, 40


@pytest.fixture(scope="module")
def cond():
    return np.random.default_rng(0).random((N, K)) < 0.3


def _planted(c):
    return {
        "and2": (c[:, 3] & c[:, 7], [[3, 7]]),
        "and3": (c[:, 1] & c[:, 2] & c[:, 9], [[1, 2, 9]]),
        "or_of_ands": ((c[:, 4] & c[:, 5]) | (c[:, 10] & c[:, 11]), [[4, 5], [10, 11]]),
        "single": (c[:, 0], [[0]]),
        "or_of_singles": (c[:, 12] | c[:, 13], [[12], [13]]),
    }


def test_planted_conjunctions_and_ors_are_recovered_exactly(cond):
    planted = _planted(cond)
    active = np.stack([a for a, _ in planted.values()], 1)
    fit, held = split_rows(N, seed=1)
    ex = explain(cond, active, fit_rows=fit, heldout_rows=held, progress=False)
    for f, (name, (_, rule)) in enumerate(planted.items()):
        got = sorted(sorted(conj) for conj in ex.rule(f))
        assert got == sorted(rule), name
        assert ex.f1[f] == 1.0 and ex.precision[f] == 1.0 and ex.recall[f] == 1.0, name


def test_or_is_kept_only_when_it_helps(cond):
    active = (cond[:, 3] & cond[:, 7])[:, None]
    fit, held = split_rows(N, seed=1)
    off = explain(cond, active, fit_rows=fit, heldout_rows=held,
                  config=ExplainConfig(allow_or=False), progress=False)
    on = explain(cond, active, fit_rows=fit, heldout_rows=held, progress=False)
    assert (on.conjunctions[0, 1] == -1).all() and (off.conjunctions[0, 1] == -1).all()
    assert on.rule(0) == off.rule(0)


def test_one_family_is_never_conjoined():
    rng = np.random.default_rng(2)
    ap = rng.integers(0, 30, N)
    other = rng.random(N) < 0.5
    # Nested rungs of one quantity (>=6, >=12, >=21) and one independent condition.
    c = np.stack([ap >= 6, ap >= 12, ap >= 21, other], 1)
    active = ((ap >= 12) & other)[:, None]
    fit, held = split_rows(N)
    ex = explain(c, active, fit_rows=fit, heldout_rows=held,
                 families=np.array([0, 0, 0, 1]), progress=False)
    assert sorted(ex.rule(0)[0]) == [1, 3]
    # Without families a redundant rung may join; with them every conjunction has one rung.
    assert all(len({0, 1, 2} & set(conj)) <= 1 for conj in ex.rule(0))


def _rungs_world(seed=6):
    """A quantity whose inputs with ``other`` nearly all reach 12: the feature fires on
    ``other`` and >= 3, so ">= 3" fits best, ">= 12" misses 1% of the positives."""
    rng = np.random.default_rng(seed)
    other = rng.random(N) < 0.4
    u = rng.random(N)
    ap = np.where(u < 0.04, rng.integers(0, 3, N),
                  np.where(u < 0.05, rng.integers(3, 12, N), rng.integers(12, 30, N)))
    ap = np.where(other, ap, rng.integers(0, 30, N))
    # Rungs of one family, stricter first (the catalogue's order), then the other condition.
    c = np.stack([ap >= 21, ap >= 12, ap >= 6, ap >= 3, other], 1)
    return c, ((ap >= 3) & other)[:, None], np.array([0, 0, 0, 0, 1])


@pytest.mark.parametrize("tolerance, rung", [(0.01, 1), (0.0, None), (-1.0, 3)])
def test_rules_take_the_strictest_rung_that_fits_as_well(tolerance, rung):
    c, active, fam = _rungs_world()
    fit, held = split_rows(N)
    cfg = ExplainConfig(tighten_tolerance=tolerance, allow_or=False)
    ex = explain(c, active, fit_rows=fit, heldout_rows=held, families=fam, config=cfg,
                 progress=False)
    loose = explain(c, active, fit_rows=fit, heldout_rows=held, families=fam,
                    config=ExplainConfig(tighten_tolerance=-1.0, allow_or=False),
                    progress=False)
    assert loose.rule(0) == [[3, 4]]
    if rung is None:  # no loss allowed: only a rung that fits exactly as well may replace
        assert ex.rule(0)[0][1] == 4 and ex.rule(0)[0][0] in (2, 3)
        assert ex.fit_f1[0] == loose.fit_f1[0]
    else:
        assert ex.rule(0) == [[rung, 4]]
    # The fit F1 reported is the tightened rule's own, within the tolerance of the loose one.
    a, m = active[fit, 0], (c[fit][:, ex.rule(0)[0]]).all(1)
    assert ex.fit_f1[0] == pytest.approx(2 * (a & m).sum() / (a.sum() + m.sum()))
    assert ex.fit_f1[0] >= loose.fit_f1[0] - max(tolerance, 0.0) - 1e-12
    if rung == 1:
        assert ex.fit_f1[0] < loose.fit_f1[0]  # a real trade, not a tie


def test_scores_equal_a_direct_numpy_computation(cond):
    rng = np.random.default_rng(3)
    noisy = (cond[:, 3] & cond[:, 7]) ^ (rng.random(N) < 0.05)
    active = np.stack([noisy, rng.random(N) < 0.1, cond[:, 0] & (rng.random(N) < 0.7)], 1)
    fit, held = split_rows(N, seed=4)
    cfg = ExplainConfig(max_fit_rows=1500)
    ex = explain(cond, active, fit_rows=fit, heldout_rows=held, config=cfg, progress=False)
    assert ex.search_rows == 1500 and ex.fit_rows == len(fit)
    for f in range(active.shape[1]):
        mask = np.zeros(N, bool)
        for conj in ex.rule(f):
            mask |= cond[:, conj].all(1)
        a, m = active[held, f], mask[held]
        tp = (a & m).sum()
        assert ex.precision[f] == pytest.approx(tp / m.sum() if m.sum() else 0.0)
        assert ex.recall[f] == pytest.approx(tp / a.sum())
        assert ex.f1[f] == pytest.approx(2 * tp / (a.sum() + m.sum()))
        assert ex.frequency[f] == pytest.approx(a.mean())
        assert ex.rule_frequency[f] == pytest.approx(m.mean())
    # Lifts: P(active | c) / P(active) on the search rows, highest first, support >= 10.
    f = 2
    rows = np.sort(np.random.default_rng(cfg.seed).choice(fit, cfg.max_fit_rows,
                                                          replace=False))
    a, c = active[rows, f], cond[rows]
    lift = (a[:, None] & c).sum(0) / c.sum(0) / a.mean()
    assert ex.lift_condition[f, 0] == np.argmax(lift) == 0
    assert ex.lift[f] == pytest.approx(np.sort(lift)[::-1][:cfg.top_lifts])
    assert ex.lift_support[f, 0] == c[:, 0].sum()


def test_levels_explain_the_strong_activations():
    rng = np.random.default_rng(5)
    c = rng.random((N, K)) < 0.3
    strong = c[:, 2] & c[:, 6]
    weak = c[:, 9] | strong  # fires weakly on a broad set, strongly on the conjunction
    fit, held = split_rows(N)
    ex = explain(c, [weak[:, None], strong[:, None]], fit_rows=fit, heldout_rows=held,
                 progress=False)
    assert ex.level[0] == 1 and sorted(ex.rule(0)[0]) == [2, 6] and ex.f1[0] == 1.0
    assert ex.f1_level0[0] < 1.0


def test_or_part_searched_at_the_chosen_level_only():
    rng = np.random.default_rng(6)
    c = rng.random((N, K)) < 0.3
    strong = (c[:, 2] & c[:, 6]) | (c[:, 10] & c[:, 11])
    weak = c[:, 9] | strong  # weakly on a broad set, strongly on an OR of two conjunctions
    fit, held = split_rows(N)
    levels = [weak[:, None], strong[:, None]]
    # Searching the OR at every level finds that the strong level is the planted OR.
    every = explain(c, levels, fit_rows=fit, heldout_rows=held, progress=False)
    assert every.level[0] == 1 and every.f1[0] == 1.0
    assert sorted(sorted(conj) for conj in every.rule(0)) == [[2, 6], [10, 11]]
    # Searched at the chosen level only, the level is chosen by first conjunctions alone:
    # "c9" fits the weak level better than half of the OR fits the strong one.
    chosen = explain(c, levels, fit_rows=fit, heldout_rows=held, progress=False,
                     config=ExplainConfig(or_at_chosen_level=True))
    assert chosen.level[0] == 0 and chosen.rule(0)[0] == [9]
    # ... and its OR part is searched there: one of the planted conjunctions adds recall.
    assert len(chosen.rule(0)) == 2 and sorted(chosen.rule(0)[1]) in ([2, 6], [10, 11])
    assert chosen.f1[0] < every.f1[0]


def test_active_matrix_packs_batches_of_any_size():
    rng = np.random.default_rng(6)
    dense = rng.random((37, 5)) < 0.4
    a = ActiveMatrix.from_batches([dense[:3], dense[3:20], dense[20:]])
    assert a.shape == (37, 5)
    assert (a.columns(0, 5) == dense).all() and (a.columns(1, 3, [0, 36]) == dense[[0, 36], 1:3]
                                                  ).all()
    assert (ActiveMatrix.from_dense(dense).packed == a.packed).all()


def test_conjunction_mask_and_text():
    c = np.array([[1, 0, 1], [1, 1, 1], [0, 1, 0]], bool)
    assert conjunction_mask(c, np.array([0, 2, -1])).tolist() == [True, True, False]
    assert not conjunction_mask(c, np.array([-1, -1])).any()
    texts = ["Ninja Squid", "Swim Speed Up ≥15", "class: charger"]
    assert rule_text([[0, 1]], texts) == "Ninja Squid and Swim Speed Up ≥15"
    assert rule_text([[0, 1], [2]], texts) == \
        "(Ninja Squid and Swim Speed Up ≥15) or class: charger"
    assert sentence([[0, 1]], texts, 0.934, 0.11) == \
        "Ninja Squid and Swim Speed Up ≥15 (F1 0.93, fires 11%)"
    assert "at activation ≥ 1.6" in sentence([[2]], texts, 0.9, 0.004, level=1.6)


def test_bad_input_is_named(cond):
    with pytest.raises(ValueError, match="rows"):
        explain(cond, np.zeros((N - 1, 2), bool), fit_rows=[0], heldout_rows=[1])
    with pytest.raises(ValueError, match="max_terms"):
        ExplainConfig(max_terms=4)
    with pytest.raises(ValueError, match="fit_fraction"):
        split_rows(10, fit_fraction=1.0)


def test_a_priced_condition_enters_only_when_it_earns_its_price(cond):
    rng = np.random.default_rng(7)
    target = cond[:, 3] & cond[:, 7]
    # Column K: true on every positive and on 97% of the rest (like "lacks Ability
    # Doubler"); column K + 1: the negation of column 5.
    nearly_all = target | (rng.random(N) < 0.97)
    c = np.concatenate([cond, nearly_all[:, None], ~cond[:, 5:6]], 1)
    active = np.stack([target, target & ~cond[:, 5]], 1)
    fit, held = split_rows(N, seed=1)
    free = explain(c, active, fit_rows=fit, heldout_rows=held, progress=False)
    assert K in free.rule(0)[0]  # unpriced, the near-constant condition pads the rule
    costs = np.zeros(K + 2)
    costs[K:] = 0.02
    priced = explain(c, active, fit_rows=fit, heldout_rows=held, costs=costs, progress=False)
    assert priced.rule(0) == [[3, 7]]
    assert sorted(priced.rule(1)[0]) == [3, 7, K + 1] and priced.f1[1] == 1.0  # it earns it
    with pytest.raises(ValueError, match="costs"):
        explain(c, active, fit_rows=fit, heldout_rows=held, costs=-costs, progress=False)


def test_a_level_with_few_positives_is_not_searched(cond):
    strong = cond[:, 2] & cond[:, 6] & cond[:, 8]  # ~2.7%: ~54 positives on the fit half
    weak = cond[:, 9] | strong
    fit, held = split_rows(N)
    assert 40 < strong[fit].sum() < 70
    for floor, level in ((30, 1), (80, 0)):
        ex = explain(cond, [weak[:, None], strong[:, None]], fit_rows=fit, heldout_rows=held,
                     config=ExplainConfig(min_level_positives=floor), progress=False)
        assert ex.level[0] == level, floor


def _broad_case(seed=0, n=6000):
    """A feature that fires only where condition 0 holds: always on 0 & 1 (about a quarter
    of 0's rows), and on a random 40% of the rest of 0, which no condition describes.
    Condition 0 alone is its best rule by F1 (precision ~0.55, recall 1: broader than the
    feature); 0 and 1 together is fully precise at a slightly lower F1."""
    rng = np.random.default_rng(seed)
    c = rng.random((n, 12)) < 0.3
    c[:, 0] = rng.random(n) < 0.5
    c[:, 1] = rng.random(n) < 0.25
    hidden = rng.random(n) < 0.4
    active = c[:, 0] & (c[:, 1] | hidden)
    return c, active


def test_a_rule_broader_than_its_feature_gets_the_conjunction_that_restores_precision():
    c, active = _broad_case()
    fit, held = split_rows(len(c), seed=2)
    plain = explain(c, active[:, None], fit_rows=fit, heldout_rows=held, progress=False,
                    config=ExplainConfig(broad_ratio=0.0, allow_or=False))
    assert plain.rule(0) == [[0]] and not plain.restored[0]
    assert plain.precision[0] < 0.6 * plain.recall[0]  # broader than the feature
    ex = explain(c, active[:, None], fit_rows=fit, heldout_rows=held, progress=False,
                 config=ExplainConfig(allow_or=False))
    assert ex.rule(0) == [[0, 1]] and ex.restored[0]
    assert ex.precision[0] == 1.0 and ex.precision[0] >= 0.6 * ex.recall[0]
    # It costs some fit F1, within the tolerance; with none allowed the broad rule stays.
    assert plain.fit_f1[0] - 0.05 <= ex.fit_f1[0] < plain.fit_f1[0]
    strict = explain(c, active[:, None], fit_rows=fit, heldout_rows=held, progress=False,
                     config=ExplainConfig(allow_or=False, restore_tolerance=0.0))
    assert strict.rule(0) == [[0]] and not strict.restored[0]


def test_a_precise_rule_is_left_as_it_is(cond):
    active = (cond[:, 3] & cond[:, 7])[:, None]
    fit, held = split_rows(N, seed=1)
    ex = explain(cond, active, fit_rows=fit, heldout_rows=held, progress=False)
    assert ex.rule(0) == [[3, 7]] and not ex.restored.any()


def test_broad_ratio_is_checked():
    with pytest.raises(ValueError, match="broad_ratio"):
        ExplainConfig(broad_ratio=1.5)
