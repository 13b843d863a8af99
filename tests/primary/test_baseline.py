"""The weapon-conditional frequency baseline on hand-made examples."""

import numpy as np
import pytest

from primary.baseline import (
    choose_threshold,
    evaluate_baseline,
    fit_baseline,
    input_multihot,
    predict,
)
from primary.examples import Examples
from primary.set_metrics import scores_from_counts

V, PAD, NULL = 6, 5, 4


def make(tokens, weapons, build_index, targets):
    tokens = np.asarray(tokens, np.int32)
    return Examples(tokens, (tokens != PAD).sum(1).astype(np.int32),
                    np.asarray(weapons, np.int32)[:, None], np.asarray(build_index, np.int32),
                    np.asarray(targets, bool), PAD, NULL)


# Four builds: weapon 0 always has token 0 and, in one build of two, token 1;
# weapon 1 has token 2 in both builds. Weapon 2 has no builds.
TARGETS = [[1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0]]
TRAIN = make([[0, PAD], [NULL, PAD], [2, PAD], [NULL, PAD]], [0, 0, 1, 1], [0, 1, 2, 3],
             TARGETS)


def test_frequencies_are_add_one_smoothed_per_weapon_with_global_fallback():
    b = fit_baseline(TRAIN, 3, pad_id=PAD, null_id=NULL)
    # <PAD> (id 5) is never part of a build: probability 0, not smoothed.
    np.testing.assert_allclose(b.probs[0], [3 / 4, 2 / 4, 1 / 4, 1 / 4, 1 / 4, 0])
    np.testing.assert_allclose(b.probs[1], [1 / 4, 1 / 4, 3 / 4, 2 / 4, 1 / 4, 0])
    np.testing.assert_allclose(b.probs[2], np.mean(TARGETS, axis=0))


def test_given_tokens_are_predicted_but_pad_and_null_are_not_copied():
    b = fit_baseline(TRAIN, 3, pad_id=PAD, null_id=NULL, threshold=0.6)
    pred = predict(b, np.array([[3, NULL, PAD], [NULL, PAD, PAD]]), np.array([[0], [2]]))
    expected = np.zeros((2, V), bool)
    expected[0, [0, 3]] = True  # token 0 by frequency 3/4, token 3 given
    # row 1: the global frequencies are all <= 1/2, so nothing is predicted
    np.testing.assert_array_equal(pred, expected)
    assert not input_multihot(np.array([[PAD, NULL]]), V, (PAD, NULL)).any()


def test_scores_are_micro_averaged_over_all_pairs():
    b = fit_baseline(TRAIN, 3, pad_id=PAD, null_id=NULL, threshold=0.6)
    val = make([[1, PAD], [NULL, PAD]], [0, 1], [0, 1], [[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0]])
    # Row 0 predicts {0, 1}: 2 tp. Row 1 predicts {2}: 1 tp, token 3 missed.
    got = evaluate_baseline(b, val)
    assert got["f1"] == pytest.approx(scores_from_counts(3, 0, 1)["f1"])
    assert got["precision"] == 1.0 and got["recall"] == pytest.approx(0.75)


def test_threshold_is_chosen_for_the_best_f1():
    b = fit_baseline(TRAIN, 3, pad_id=PAD, null_id=NULL, threshold=0.9)
    val = make([[NULL, PAD]], [1], [0], [[0, 0, 1, 1, 0, 0]])
    # Weapon 1 gives token 2 p=3/4 and token 3 p=1/2: a threshold under 1/2 finds both.
    best = choose_threshold(b, val, grid=(0.3, 0.6, 0.9))
    assert best.threshold == 0.3
    assert evaluate_baseline(best, val)["f1"] > evaluate_baseline(b, val)["f1"]


def test_scores_from_counts_handles_empty_cases():
    assert scores_from_counts(0, 0, 0) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    assert scores_from_counts(2, 2, 0) == {"f1": pytest.approx(2 / 3), "precision": 0.5,
                                           "recall": 1.0}
