"""Slot-recovery evaluation: item matching, the held-out split, and a run on an imported model."""

import json

import numpy as np
import pytest

from primary.eval_completion import (
    held_out_builds,
    hide,
    legal,
    random_completion,
    recovered,
    run,
    slot_items,
)
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
