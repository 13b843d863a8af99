"""Slot-recovery evaluation: item matching, the held-out split, SplatNLP's protocol (context
tokens only, best of 3, any reference), and a run on an imported model."""

import json
from pathlib import Path

import numpy as np
import pytest

from primary.builds import slots_to_ap
from primary.completion import RankedBuilds, complete_builds
from primary.eval_completion import (
    HeldOut,
    any_reference_recovered,
    ap_closeness,
    best_of,
    context_input,
    evaluate_completion,
    full_build_in_ranges,
    held_out_builds,
    hide,
    legal,
    observed_dropped,
    random_completion,
    recovered,
    run,
    slot_items,
    summary_lines,
)
from primary.examples import split_builds
from primary.sources import default_vocabs
from primary.vocab import ABILITIES, ABILITY_INDEX, ap_to_token_multihot
from tests.fixture_paths import SPLATNLP_FIXTURE
from tests.tiny_setup import primary_for, tiny_world

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


def ap_row(**ap) -> np.ndarray:
    row = np.zeros(len(ABILITIES), np.int64)
    for name, value in ap.items():
        row[A[name]] = value
    return row


def test_the_context_input_is_each_observed_ability_at_its_top_tokens_minimum():
    observed = ap_row(swim_speed_up=13, ninja_squid=10, ink_saver_main=10, run_speed_up=3,
                      quick_respawn=20, special_charge_up=0)
    want = ap_row(swim_speed_up=12, ninja_squid=10, ink_saver_main=6, run_speed_up=3,
                  quick_respawn=15)
    got = context_input(observed[None])
    np.testing.assert_array_equal(got[0], want)
    # The same tokens as the observed: the completer is told exactly what the tokens say.
    np.testing.assert_array_equal(ap_to_token_multihot(got), ap_to_token_multihot(observed[None]))


def build_from(mains, subs):
    """``(1, 3)``, ``(1, 9)`` slot arrays of ability names."""
    return (np.array([[A[a] for a in mains]]), np.array([[A[a] for a in subs]]))


def test_best_of_3_takes_the_build_nearest_in_ap_not_the_one_recovering_most():
    # Hidden: the head main (swim) and the three head subs (ism): swim 10, ism 9 to find.
    true_mains, true_subs = build_from(
        ["swim_speed_up", "ninja_squid", "run_speed_up"],
        ["ink_saver_main"] * 3 + ["quick_respawn"] * 3 + ["special_saver"] * 3)
    hidden = np.zeros((1, 12), bool)
    hidden[0, [0, 3, 4, 5]] = True
    observed_part = (["ninja_squid", "run_speed_up"], ["quick_respawn"] * 3
                     + ["special_saver"] * 3)
    # Top-1: swim main right, three wrong subs (1 recovered, AP off by 9 + 9).
    top1 = build_from(["swim_speed_up"] + observed_part[0],
                      ["sub_power_up"] * 3 + observed_part[1])
    # Second: the two swapped, ism main and swim subs (0 recovered, AP off by 1 + 1).
    second = build_from(["ink_saver_main"] + observed_part[0],
                        ["swim_speed_up"] * 3 + observed_part[1])
    third = build_from(["quick_respawn"] + observed_part[0],
                       ["quick_respawn"] * 3 + observed_part[1])
    cands = [top1, second, third]
    ranked = RankedBuilds(
        np.stack([c[0][0] for c in cands])[None], np.stack([c[1][0] for c in cands])[None],
        np.stack([slots_to_ap(*c)[0] for c in cands])[None], np.array([[3.0, 2.0, 1.0]]))
    true_ap = slots_to_ap(true_mains, true_subs)
    assert ap_closeness(ranked.ap[0], true_ap[0]).tolist() == pytest.approx(
        [1 - 18 / 114, 1 - 2 / 114, 1 - 38 / 114])
    assert best_of(ranked, true_ap).tolist() == [1]
    got = [recovered(*c, true_mains, true_subs, hidden)[0] for c in cands]
    assert got == [1, 0, 0]  # so best of 3 (0) scores below top-1 (1) here
    # Only the top 3 count, a missing build never, and equal closeness goes to the better rank.
    assert best_of(ranked, true_ap, top=1).tolist() == [0]
    missing = RankedBuilds(ranked.mains, ranked.subs, ranked.ap, np.array([[3.0, -np.inf,
                                                                           -np.inf]]))
    assert best_of(missing, true_ap).tolist() == [0]
    twice = RankedBuilds(ranked.mains, ranked.subs, ranked.ap[:, [1, 1, 0]], ranked.score)
    assert best_of(twice, true_ap).tolist() == [0]
    # A beam of one ranks one build (tests/primary/test_completion.py): best of 3 is top-1.
    one = RankedBuilds(ranked.mains[:, :1], ranked.subs[:, :1], ranked.ap[:, :1],
                       ranked.score[:, :1])
    assert best_of(one, true_ap).tolist() == [0]


def test_any_reference_counts_the_best_same_weapon_build_that_holds_the_observed():
    truth = build_from(["swim_speed_up", "ninja_squid", "run_speed_up"],
                       ["ink_saver_main"] * 3 + ["quick_respawn"] * 3 + ["special_saver"] * 3)
    # Same weapon, same observed items, the hidden head subs are swim subs instead.
    other = build_from(["swim_speed_up", "ninja_squid", "run_speed_up"],
                       ["swim_speed_up"] * 3 + ["quick_respawn"] * 3 + ["special_saver"] * 3)
    # Holds other slot items than the observed: never a reference for the first build.
    unrelated = build_from(["comeback", "haunt", "stealth_jump"], ["ink_resistance_up"] * 9)
    true_mains = np.concatenate([truth[0], other[0], unrelated[0]])
    true_subs = np.concatenate([truth[1], other[1], unrelated[1]])
    hidden = np.zeros((3, 12), bool)
    hidden[:, [3, 4, 5]] = True
    # Each completion fills the hidden subs with swim subs.
    pred_mains = true_mains.copy()
    pred_subs = true_subs.copy()
    pred_subs[:, :3] = A["swim_speed_up"]
    single = recovered(pred_mains, pred_subs, true_mains, true_subs, hidden)
    assert single.tolist() == [0, 3, 0]
    same = np.array([40, 40, 40])
    got = any_reference_recovered(pred_mains, pred_subs, true_mains, true_subs, hidden, same)
    assert got.tolist() == [3, 3, 0]  # the first is scored against the second build
    # Another weapon: its builds are no references; each build alone is the single truth.
    apart = np.array([40, 50, 40])
    np.testing.assert_array_equal(
        any_reference_recovered(pred_mains, pred_subs, true_mains, true_subs, hidden, apart),
        single)
    assert not observed_dropped(pred_mains, pred_subs, true_mains, true_subs, hidden).any()
    pred_mains[0, 1] = A["haunt"]  # the observed ninja main swapped out
    assert observed_dropped(pred_mains, pred_subs, true_mains, true_subs, hidden).tolist() == [
        True, False, False]


def tiny_held_out():
    builds, vocab, weapon_vocab = tiny_world()
    return HeldOut(builds, builds, "the tiny world", 0), vocab, weapon_vocab


def test_the_two_protocols_differ_in_what_the_completer_is_given():
    held, vocab, weapon_vocab = tiny_held_out()
    model = primary_for(vocab, weapon_vocab)
    ks = (4,)
    ours = evaluate_completion(model, vocab, weapon_vocab, held, beam_size=3, seed=2, ks=ks,
                               progress=False)
    theirs = evaluate_completion(model, vocab, weapon_vocab, held, beam_size=3, seed=2, ks=ks,
                                 progress=False, protocol="splatnlp")
    assert (ours["protocol"], theirs["protocol"]) == ("ours", "splatnlp")
    assert "completion_slot_acc_best_of_3" not in ours["methods"]["model"]
    # Recomputed by hand: the same hidden slots; ours completes the exact observed AP,
    # SplatNLP's protocol the observed tokens' minimum AP.
    mains, subs = slot_items(held.test.ap)
    observed, hidden = hide(mains, subs, 4, np.random.default_rng([2, 4]))
    for result, given in ((ours, observed), (theirs, context_input(observed))):
        out = complete_builds(model, vocab, weapon_vocab, held.test.weapons, given, beam_size=3)
        want = int(recovered(out.mains, out.subs, mains, subs, hidden).sum())
        assert result["methods"]["model"]["recovered"] == [want]
        assert result["methods"]["model"]["completion_slot_acc"] == [want / hidden.sum()]
        if result is theirs:
            pick = best_of(out.ranked, held.test.ap)
            take = (np.arange(len(pick)), pick)
            best = recovered(out.ranked.mains[take], out.ranked.subs[take], mains, subs, hidden)
            assert result["methods"]["model"]["recovered_best_of_3"] == [int(best.sum())]
    # The random completer keeps the observed slot items in both: the same builds.
    assert ours["methods"]["random"]["recovered"] == theirs["methods"]["random"]["recovered"]
    for method, r in theirs["methods"].items():
        assert r["illegal"] == [0]
        assert r["recovered_any_reference"][0] >= r["recovered"][0]
        if method == "random":
            assert r["recovered_best_of_3"] == r["recovered"] and r["observed_dropped"] == [0]
    text = "\n".join(summary_lines(theirs))
    assert "splatnlp protocol" in text and "best of 3" in text
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate_completion(model, vocab, weapon_vocab, held, protocol="sendou")


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
