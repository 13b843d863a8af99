"""A weapon-conditional token-frequency baseline for set completion.

The model has to beat something that needs no learning: the tokens given as
input are certainly in the build, and every other token is predicted present
when its frequency among the training builds of the same weapon, P(token |
weapon), is above a threshold. Frequencies use add-one smoothing; a weapon with
no training builds falls back to the global frequency. ``<PAD>`` is never predicted.

The threshold is either fixed (0.5, the model's own) or chosen to maximise F1
on a set of examples (:func:`choose_threshold`); the training run chooses it on
the validation examples, which favours the baseline when it is scored on them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from primary.set_metrics import scores_from_counts

THRESHOLD_GRID = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2).tolist())


@dataclass(frozen=True)
class FrequencyBaseline:
    """probs: ``(weapon_vocab_size, vocab_size)`` float32 P(token | weapon).

    ``not_copied``: token ids that are never copied from input to output
    (``<PAD>``; ``<NULL>``, which only stands for "nothing given").
    """

    probs: np.ndarray
    threshold: float = 0.5
    not_copied: tuple[int, ...] = ()


def build_weapons(examples) -> np.ndarray:
    """``(n_builds,)`` weapon vocab id of each build, read off its examples."""
    weapons = np.full(len(examples.targets), -1, np.int64)
    weapons[examples.build_index] = examples.weapons[:, 0]
    return weapons


def fit_baseline(examples, weapon_vocab_size: int, *, pad_id: int, null_id: int,
                 threshold: float = 0.5) -> FrequencyBaseline:
    """Token frequencies per weapon over the builds behind ``examples`` (the training set).

    ``examples.targets``: ``(n_builds, V)`` bool; only builds some example refers to count.
    """
    targets = np.asarray(examples.targets, bool)
    weapons = build_weapons(examples)
    used = weapons >= 0
    targets, weapons = targets[used], weapons[used]
    if len(targets) == 0:
        raise ValueError("fit_baseline: no training builds to count token frequencies on")
    vocab_size = targets.shape[1]
    counts = np.zeros((weapon_vocab_size, vocab_size), np.float64)
    np.add.at(counts, weapons, targets.astype(np.float64))
    n_per_weapon = np.bincount(weapons, minlength=weapon_vocab_size).astype(np.float64)
    smoothed = (counts + 1.0) / (n_per_weapon[:, None] + 2.0)
    global_freq = targets.mean(axis=0)
    probs = np.where(n_per_weapon[:, None] > 0, smoothed, global_freq[None, :])
    probs[:, pad_id] = 0.0  # padding is never part of a build
    return FrequencyBaseline(probs.astype(np.float32), float(threshold), (pad_id, null_id))


def input_multihot(tokens: np.ndarray, vocab_size: int, not_copied=()) -> np.ndarray:
    """``(m, L)`` token ids -> ``(m, V)`` bool: which tokens each example was given."""
    tokens = np.asarray(tokens)
    given = np.zeros((len(tokens), vocab_size), bool)
    given[np.arange(len(tokens))[:, None], tokens] = True
    given[:, list(not_copied)] = False
    return given


def predict(baseline: FrequencyBaseline, tokens: np.ndarray, weapons: np.ndarray) -> np.ndarray:
    """``tokens (m, L)``, ``weapons (m, 1)`` -> ``(m, V)`` bool predicted token sets."""
    probs = baseline.probs[np.asarray(weapons)[:, 0]]
    given = input_multihot(tokens, probs.shape[1], baseline.not_copied)
    return given | (probs > baseline.threshold)


def _counts(predicted: np.ndarray, target: np.ndarray) -> tuple[int, int, int]:
    tp = int(np.count_nonzero(predicted & target))
    return tp, int(np.count_nonzero(predicted)) - tp, int(np.count_nonzero(target)) - tp


def _chunks(examples, chunk: int):
    for start in range(0, len(examples.tokens), chunk):
        sl = slice(start, start + chunk)
        target = np.asarray(examples.targets, bool)[examples.build_index[sl]]
        yield examples.tokens[sl], examples.weapons[sl], target


def evaluate_baseline(baseline: FrequencyBaseline, examples, *, chunk: int = 8192) -> dict:
    """Micro precision / recall / F1 over all (example, token) pairs, like the model's."""
    if len(examples.tokens) == 0:
        raise ValueError("evaluate_baseline: no examples to score")
    tp = fp = fn = 0
    for tokens, weapons, target in _chunks(examples, chunk):
        a, b, c = _counts(predict(baseline, tokens, weapons), target)
        tp, fp, fn = tp + a, fp + b, fn + c
    return {**scores_from_counts(tp, fp, fn), "threshold": baseline.threshold}


def choose_threshold(baseline: FrequencyBaseline, examples, grid=THRESHOLD_GRID, *,
                     chunk: int = 8192) -> FrequencyBaseline:
    """The baseline with the threshold from ``grid`` that gives the best F1 on ``examples``."""
    if len(examples.tokens) == 0:
        raise ValueError("choose_threshold: no examples to choose a threshold on")
    counts = np.zeros((len(grid), 3), np.int64)
    for tokens, weapons, target in _chunks(examples, chunk):
        probs = baseline.probs[weapons[:, 0]]
        given = input_multihot(tokens, probs.shape[1], baseline.not_copied)
        for i, t in enumerate(grid):
            counts[i] += _counts(given | (probs > t), target)
    f1 = [scores_from_counts(*c)["f1"] for c in counts]
    return dataclasses.replace(baseline, threshold=float(grid[int(np.argmax(f1))]))
