"""Slot-recovery evaluation: item matching, the held-out split, and a run on an imported model."""

import json
from pathlib import Path

import numpy as np
import pytest

from primary.eval_completion import (
    full_build_in_ranges,
    held_out_builds,
    hide,
    legal,
    random_completion,
    recovered,
    run,
    slot_items,
)
from primary.examples import split_builds
from primary.sources import default_vocabs
from primary.vocab import ABILITY_INDEX, ap_to_token_multihot
from tests.fixture_paths import SPLATNLP_FIXTURE

A = ABILITY_INDEX


def one_build():
    """swim main x2 + ninja main; subs: swim x3, ism x3, rsu x3."""
    mains = np.array([[A["swim_speed_up"], A["ninja_squid"], A["swim_speed_up"]]])
    subs = np.array([[A["swim_speed_up"]] * 3 + [A["ink_saver_main"]] * 3
                     + [A["run_speed_up"]] * 3])
    return mains, subs


def test_recovered_counts_multiset_matches():
    mains, subs = one_build()
    hidden = np.zeros((1, 12), bool)
    hidden[0, [1, 3, 9]] = True  # ninja main, one swim sub, one rsu sub
    assert recovered(mains, subs, mains, subs, hidden)[0] == 3  # the true build: all back
    # Swap the hidden rsu sub for a quick_respawn sub: two of three.
    pred_subs = subs.copy()
    pred_subs[0, 8] = A["quick_respawn"]
    assert recovered(mains, pred_subs, mains, subs, hidden)[0] == 2
    # A swim main where the hidden ninja was: the kind (main) matches, the ability does not.
    pred_mains = mains.copy()
    pred_mains[0, 1] = A["swim_speed_up"]
    assert recovered(pred_mains, subs, mains, subs, hidden)[0] == 2
    # Positions do not matter.
    assert recovered(mains[:, ::-1], subs[:, ::-1], mains, subs, hidden)[0] == 3


def test_hide_removes_exactly_k_items():
    from primary.synthetic import generate_builds

    builds = generate_builds(50, seed=4)
    mains, subs = slot_items(builds.ap)
    for k in (1, 4, 6):
        observed, hidden = hide(mains, subs, k, np.random.default_rng(k))
        assert (hidden.sum(1) == k).all()
        lost = builds.ap.astype(np.int64).sum(1) - observed.sum(1)
        amount = np.where(np.arange(12) < 3, 10, 3)
        np.testing.assert_array_equal(lost, (hidden * amount).sum(1))
        m, s = random_completion(observed, np.random.default_rng(0))
        assert legal(m, s, observed).all()
        assert (recovered(mains, subs, mains, subs, hidden) == k).all()


def test_held_out_builds_are_the_primarys_test_split(tmp_path):
    from primary.training import PrimaryTrainConfig, prepare_data

    cfg = PrimaryTrainConfig(num_builds=60, seed=3, num_instances=1)
    (tmp_path / "model").mkdir()
    (tmp_path / "train_config.json").write_text(json.dumps(cfg.to_dict()))
    data = prepare_data(cfg)
    held = held_out_builds(tmp_path / "model", data.vocab, data.weapon_vocab, num_builds=1000)
    want = data.test.targets[:, data.vocab.ability_token_ids]
    np.testing.assert_array_equal(ap_to_token_multihot(held.test.ap), want)
    assert len(held.train) == data.train.num_builds and held.skipped == 0
    assert "test split" in held.origin


def test_held_out_builds_plant_the_primarys_concept_set(tmp_path):
    """A primary trained on a custom concept set is evaluated on builds of that set."""
    from primary.concept_sets import load_concept_set, write_concept_set
    from primary.training import PrimaryTrainConfig

    example = Path(__file__).resolve().parents[2] / "apps" / "configs" / "concepts_example.json"
    concepts = load_concept_set(example)
    cfg = PrimaryTrainConfig(num_builds=200, seed=3, num_instances=1)
    (tmp_path / "model").mkdir()
    (tmp_path / "train_config.json").write_text(json.dumps(cfg.to_dict()))
    write_concept_set(tmp_path / "model", concepts)
    vocab, weapon_vocab = default_vocabs()
    held = held_out_builds(tmp_path / "model", vocab, weapon_vocab, num_builds=1000)
    assert held.test.concept_names == tuple(c.name for c in concepts)
    assert held.test.concepts.any()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from bridge.import_splatnlp import import_run

    out = tmp_path_factory.mktemp("imported")
    import_run(str(SPLATNLP_FIXTURE), str(out), model="model.pth")
    return out


def test_run_on_an_imported_model(imported, tmp_path):
    result = run(str(imported / "model"), str(tmp_path / "eval"), data_source=None, data_path="",
                 num_builds=24, beam_size=2, seed=1)
    saved = json.loads((tmp_path / "eval" / "completion_eval.json").read_text())
    assert saved["k"] == [1, 2, 3, 4, 5, 6] and saved["num_builds"] == 24
    assert (tmp_path / "eval" / "completion_eval.png").stat().st_size > 1000
    for method in ("random", "baseline", "model"):
        r = result["methods"][method]
        assert r["illegal"] == [0] * 6
        assert r["hidden"] == [24 * k for k in range(1, 7)]
        assert all(0.0 <= a <= 1.0 for a in r["completion_slot_acc"])
        assert r["recovered"] == [round(a * h) for a, h in zip(r["completion_slot_acc"],
                                                               r["hidden"])]
    assert "test part of synthetic" in result["data"]


def test_bad_settings_are_errors(imported, tmp_path):
    with pytest.raises(ValueError, match="--num_builds"):
        run(str(imported / "model"), str(tmp_path), data_source=None, data_path="",
            num_builds=0, beam_size=2, seed=0)
    with pytest.raises(FileNotFoundError, match="not a primary model directory"):
        run(str(tmp_path / "nothing"), str(tmp_path), data_source=None, data_path="",
            num_builds=5, beam_size=2, seed=0)


def test_held_out_builds_from_a_tsv_are_rebuilt_inside_their_token_ranges(imported, tmp_path):
    from primary.builds import BuildSet, check_ap_legal
    from primary.model_dir import load_primary
    from primary.sources import load_builds
    from primary.splatnlp_tsv import write_splatnlp_tsv

    _, vocab, wv = load_primary(imported / "model")
    full = load_builds("synthetic", num_builds=40, seed=2, weapon_vocab=wv)
    partial = full.ap.copy()
    partial[::4] = 0
    partial[::4, A["swim_speed_up"]] = 12  # every fourth build: 12 AP in all, not a build
    write_splatnlp_tsv(tmp_path / "b.tsv", BuildSet(full.weapons, partial), vocab, wv)
    held = held_out_builds(imported / "model", vocab, wv, data_source="splatnlp_tsv",
                           data_path=str(tmp_path / "b.tsv"), num_builds=100, seed=5)
    assert len(held.test) + held.skipped == 8  # the 20 % test part of 40
    assert held.skipped == sum(partial[i].sum() == 12 for i in split_builds(40, 5)[2])
    assert len(held.train) == 28 and "b.tsv" in held.origin
    assert check_ap_legal(held.test.ap).all()
    # Same tokens as the file's builds.
    want = ap_to_token_multihot(full.ap[split_builds(40, 5)[2]])
    got = ap_to_token_multihot(held.test.ap)
    assert all((got[i] == want).all(1).any() for i in range(len(got)))


def test_full_build_in_ranges():
    row = np.zeros(len(A), np.int64)
    row[A["ninja_squid"]] = 10
    row[A["swim_speed_up"]] = 15  # 15..20
    row[A["ink_saver_main"]] = 12  # 12..14
    row[A["run_speed_up"]] = 15  # 15..20: e.g. swim 19, ism 13, rsu 15
    out = full_build_in_ranges(row)
    assert out is not None and out.sum() == 57
    assert 15 <= out[A["swim_speed_up"]] <= 20 and 15 <= out[A["run_speed_up"]] <= 20
    assert (ap_to_token_multihot(out[None]) == ap_to_token_multihot(row[None])).all()
    row[A["run_speed_up"]] = 0
    assert full_build_in_ranges(row) is None  # at most 10 + 20 + 14 < 57
