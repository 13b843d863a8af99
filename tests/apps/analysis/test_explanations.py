"""explanations.json: the schema on a tiny run, analysis writes it, the ground-truth check."""

import json
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from apps.analysis.explanations import (
    broader_than_feature,
    compute_explanations,
    explained_on_partial,
    fresh_builds,
    ground_truth_check,
)
from apps.analysis.pipeline import analyze, explanations_line
from bridge.causal import CausalConfig, pooled_of_builds
from bridge.harvest import pooled_of_partial_builds
from primary.builds import BuildSet
from primary.model import PrimaryConfig, create_model
from primary.model_dir import save_primary
from primary.partial_builds import partial_builds
from primary.planted_concepts import CONCEPTS
from primary.synthetic import generate_builds
from primary.vocab import Vocab, WeaponVocab
from sae_jax.model import SAEConfig, create_sae
from sae_jax.rule_search import ExplainConfig
from sae_jax.sae_dir import save_sae

FEATURE_KEYS = {"rule", "rule_text", "sentence", "precision", "recall", "f1", "frequency",
                "lifts", "causal", "classes", "weapons", "level", "distribution",
                "by_distribution", "broader", "restored", "frequency_full", "frequency_partial"}


@pytest.fixture(scope="module")
def setup():
    builds = generate_builds(240, seed=3)
    vocab = Vocab.canonical()
    weapon_vocab = WeaponVocab.from_game_ids(builds.weapons)
    cfg = PrimaryConfig(vocab_size=len(vocab), weapon_vocab_size=len(weapon_vocab),
                        embedding_dim=8, hidden_dim=16, num_layers=1, num_heads=2,
                        num_inducing_points=4, pad_token_id=vocab.pad_id)
    primary = create_model(cfg, seed=0)
    pooled = pooled_of_builds(primary, builds, vocab, weapon_vocab, 64)
    sae = create_sae(SAEConfig(input_dim=16, expansion_factor=1), seed=1)
    params = sae.params()
    pre = pooled @ np.asarray(params["W_enc"])
    target = np.random.default_rng(0).uniform(0.03, 0.4, size=pre.shape[1])
    bias = -np.array([np.quantile(pre[:, j], 1 - t) for j, t in enumerate(target)])
    # Feature 0 reads what sets the empty input (the weapon alone) apart from full builds:
    # it fires on partial builds only.
    part = partial_builds(builds, vocab, weapon_vocab, seed=0)
    x_part = pooled_of_partial_builds(primary, part, vocab, weapon_vocab, batch_size=64)
    d = x_part[part.token_counts == 0].mean(0) - pooled.mean(0)
    w = np.asarray(params["W_enc"]).copy()
    w[:, 0] = d / np.linalg.norm(d)
    params["W_enc"] = jax.numpy.asarray(w)
    bias[0] = -max(np.quantile(x_part @ w[:, 0], 0.9), (pooled @ w[:, 0]).max())
    params["b_enc"] = jax.numpy.asarray(bias)
    sae.set_params(params)
    return SimpleNamespace(builds=builds, vocab=vocab, weapon_vocab=weapon_vocab,
                           primary=primary, sae=sae, pooled=pooled)


def test_document_schema(setup):
    s = setup
    doc = compute_explanations(s.primary, s.vocab, s.weapon_vocab, s.sae, s.builds, s.pooled,
                               curve_features=[0, 3], progress=False, min_builds=0,
                               explain_config=ExplainConfig(min_rule_support=3),
                               causal_config=CausalConfig(per_direction=4, batch_size=64))
    json.dumps(doc)  # JSON-ready
    assert doc["version"] == 1 and doc["num_builds"] == len(s.builds)
    assert doc["fit_rows"] + doc["heldout_rows"] == len(s.builds)
    assert 0 < doc["num_conditions"] <= doc["num_catalogue_conditions"]
    summary = doc["summary"]
    assert {"median_f1_window", "explained", "causal_agreement", "ground_truth",
            "explained_share", "nondead", "by_distribution", "too_rare"} <= set(summary)
    assert summary["ground_truth"] is None
    assert summary["explained_share"] == pytest.approx(summary["explained"] / summary["nondead"])
    # The activations on partial builds that explained features carry, of all of them.
    on = [e["frequency_partial"] for e in doc["features"].values()]
    carried = [e["frequency_partial"] for e in doc["features"].values()
               if e["rule"] and e["f1"] >= summary["explained_f1"]]
    assert summary["explained_activity_share"] == pytest.approx(sum(carried) / sum(on))
    assert 0 < summary["explained_activity_share"] < 1
    assert sum(d["features"] for d in summary["by_distribution"].values()) == s.sae.hidden_dim
    part = doc["partial_builds"]
    assert part["fit_rows"] + part["heldout_rows"] == part["rows"] and part["empty_inputs"] > 0
    # Feature 0 fires on partial builds only: it is explained there, and says so.
    zero = doc["features"]["0"]
    assert zero["distribution"] == "partial" and zero["frequency_full"] == 0
    assert zero["frequency_partial"] > 0.05 and "on partial builds" in zero["sentence"]
    assert set(zero["by_distribution"]) == {"full", "partial"}
    assert zero["by_distribution"]["partial"]["rule"] == zero["rule"]
    assert zero["causal"]["add"]["n"] + zero["causal"]["remove"]["n"] > 0
    # Its strongest partial builds, distinct and strongest first: the empty input of a
    # weapon (the feature reads what sets it apart from full builds).
    top = zero["top_partial"]
    assert 0 < len(top) <= 5 and [t["activation"] for t in top] == sorted(
        (t["activation"] for t in top), reverse=True)
    assert len({(t["game_id"], tuple(t["tokens"])) for t in top}) == len(top)
    assert top[0]["tokens"] == [] and top[0]["activation"] > 0.01
    assert all("top_partial" not in e for e in doc["features"].values()
               if e["distribution"] == "full")
    assert sorted(doc["features"], key=int) == [str(f) for f in range(s.sae.hidden_dim)]
    with_rule = 0
    for f, e in doc["features"].items():
        assert FEATURE_KEYS <= set(e), f
        assert ("rung_curves" in e) == (f in ("0", "3"))
        assert all(isinstance(conj, list) and conj for conj in e["rule"])
        assert 0 <= e["precision"] <= 1 and 0 <= e["recall"] <= 1 and 0 <= e["f1"] <= 1
        assert set(e["causal"]) == {"add", "remove", "agrees"}
        assert set(e["causal"]["add"]) == {"n", "mean_change", "turned_on"}
        assert set(e["causal"]["remove"]) == {"n", "mean_change", "turned_off"}
        for row in e["classes"]:
            assert {"class", "rate", "base", "lift", "support"} <= set(row)
            assert row["lift"] == pytest.approx(row["rate"] / row["base"])
        for row in e["weapons"]:
            assert {"weapon", "game_id", "rate", "lift", "support"} <= set(row)
        for row in e["lifts"]:
            assert {"condition", "text", "lift", "precision", "support"} <= set(row)
        assert e["distribution"] in e["by_distribution"]
        assert e["broader"] == (bool(e["rule"]) and e["precision"] < 0.6 * e["recall"])
        if e["distribution"] == "full":
            assert e["frequency_full"] >= 0.5 * e["frequency_partial"]
        if e["rule"]:
            with_rule += 1
            assert e["sentence"].startswith(e["rule_text"]) and "F1" in e["sentence"]
            assert f"on {e['distribution']} builds" in e["sentence"]
            assert e["causal"]["agrees"] in (True, False, None)
    assert with_rule > 0
    curve = doc["features"]["0"]["rung_curves"]["swim_speed_up"]
    assert curve["ap"][0] == 0 and len(curve["ap"]) == len(curve["mean"])


def test_partial_builds_come_from_at_most_the_cap_of_builds_on_their_side(setup,
                                                                          monkeypatch):
    from apps.analysis import explanations

    s = setup
    monkeypatch.setattr(explanations, "PARTIAL_MAX_BUILDS", 50)
    fit = np.arange(0, len(s.builds), 2)
    rows = explanations.partial_rows(s.primary, s.vocab, s.weapon_vocab, s.builds, fit,
                                     seed=4, batch_size=64)
    sources = np.unique(rows.builds.build_index)
    assert len(sources) <= 50 and sources.max() >= 50  # a sample, not the first 50
    # Two per build plus empty inputs in training's proportion (one in six rows).
    assert len(rows.builds) == 2 * 50 + 20 and len(rows.pooled) == len(rows.builds)
    # Each row on the side of the build it comes from; weapons follow their build.
    assert (rows.builds.build_index[rows.fit] % 2 == 0).all()
    assert (rows.builds.build_index[rows.held] % 2 == 1).all()
    assert (rows.builds.weapons == s.builds.weapons[rows.builds.build_index]).all()


def test_a_feature_is_explained_on_partial_builds_where_it_fires_mostly_there():
    full = np.array([0.2, 0.1, 0.0, 0.0, 0.04, 0.05])
    partial = np.array([0.1, 0.2, 0.3, 0.0, 0.1, 0.1])
    # Half the partial rate or more on full builds: full builds, where concepts live.
    assert explained_on_partial(full, partial).tolist() == [False, False, True, False, True,
                                                            False]
    assert broader_than_feature([0.5, 0.6, 0.9], [1.0, 1.0, 0.5]).tolist() == [True, False,
                                                                               False]


def _doc(rules):
    return {"features": {str(f): {"rule": rule, "rule_text": " / ".join(map(str, rule))}
                         for f, rule in rules.items()}}


def test_ground_truth_check_names_exact_abilities_within_one_rung():
    stealth = next(c for c in CONCEPTS if c.name == "stealth_slayer")  # ninja_squid, SSU 16
    zombie = next(c for c in CONCEPTS if c.name == "zombie")  # comeback, QR 19
    anchor = next(c for c in CONCEPTS if c.name == "anchor")  # ISM 13, QSJ 6
    hardy = next(c for c in CONCEPTS if c.name == "hardy")
    rows = {"rows": [
        {"concept": "stealth_slayer", "feature": 0, "sae_f1": 0.95},  # match (>=15: exact)
        {"concept": "zombie", "feature": 1, "sae_f1": 0.9},  # QR >= 29: two rungs off
        {"concept": "anchor", "feature": 2, "sae_f1": 0.85},  # an extra ability
        {"concept": "hardy", "feature": 3, "sae_f1": 0.5},  # not recovered: not checked
    ]}
    doc = _doc({0: [["ninja_squid", "swim_speed_up>=21"]],  # 21 is one rung above 15
                1: [["comeback", "quick_respawn>=29"]],
                2: [["ink_saver_main>=12", "quick_super_jump>=6", "class:charger"]],
                3: []})
    gt = ground_truth_check(doc, rows, [stealth, zombie, anchor, hardy])
    assert (gt["checked"], gt["matched"], gt["total"]) == (3, 1, 3)
    assert gt["share"] == pytest.approx(1 / 3)
    assert [m["concept"] for m in gt["misses"]] == ["zombie", "anchor"]
    assert "quick_respawn" in gt["misses"][0]["why"] and "class: charger" in gt["misses"][1][
        "why"]
    assert [c["match"] for c in gt["concepts"]] == [True, False, False]
    with pytest.raises(ValueError, match="stealth_slayer"):
        ground_truth_check(doc, rows, [zombie])
    assert gt["pairs"]["checked"] == 0  # no pairs in these rows
    # A feature explained on partial builds is checked on its full-build rule.
    doc["features"]["0"] = {"rule": [["tokens<=2"]], "rule_text": "≤2 tokens",
                            "distribution": "partial",
                            "by_distribution": {"full": doc["features"]["0"]}}
    again = ground_truth_check(doc, rows, [stealth, zombie, anchor, hardy])
    assert again["concepts"] == gt["concepts"]


def test_ground_truth_check_of_concepts_only_a_pair_recovers():
    """A concept recovered only by two features together is checked on their two rules
    together; pairs that do not recover the concept, or do not beat the single feature,
    are not checked."""
    by_name = {c.name: c for c in CONCEPTS}
    rows = {"rows": [
        {"concept": "hardy", "feature": 0, "sae_f1": 0.7, "pair_features": [1, 2],
         "pair_f1": 0.95, "pair_better": True},  # SRU 9 and IRU 9: each part names one
        {"concept": "anchor", "feature": 0, "sae_f1": 0.69, "pair_features": [3, 4],
         "pair_f1": 0.86, "pair_better": True},  # ISM at >= 21: two rungs above 13 (12)
        {"concept": "zombie", "feature": 0, "sae_f1": 0.7, "pair_features": [1, 5],
         "pair_f1": 0.95, "pair_better": True},  # feature 5 has no rule
        {"concept": "flanker", "feature": 0, "sae_f1": 0.6, "pair_features": [1, 2],
         "pair_f1": 0.75, "pair_better": True},  # the pair does not reach 0.8
        {"concept": "stealth_slayer", "feature": 6, "sae_f1": 0.9, "pair_features": [1, 2],
         "pair_f1": 0.99, "pair_better": True},  # recovered by one feature: checked as one
    ]}
    doc = _doc({1: [["sub_resistance_up>=6"]], 2: [["ink_resistance_up>=12"]],
                3: [["quick_super_jump>=6"]], 4: [["ink_saver_main>=21"]],
                6: [["ninja_squid", "swim_speed_up>=15"]]})
    gt = ground_truth_check(doc, rows, list(by_name.values()))
    assert (gt["checked"], gt["matched"]) == (1, 1)
    pairs = gt["pairs"]
    assert (pairs["checked"], pairs["matched"]) == (3, 1)
    assert [(c["concept"], c["features"], c["match"]) for c in pairs["concepts"]] == [
        ("hardy", [1, 2], True), ("anchor", [3, 4], False), ("zombie", [1, 5], False)]
    texts = [doc["features"][f]["rule_text"] for f in ("1", "2")]
    assert pairs["concepts"][0]["rule"] == f"({texts[0]}) AND ({texts[1]})"
    assert "ink_saver_main at >= 21" in pairs["misses"][0]["why"]
    assert "feature 5 has no rule" in pairs["misses"][1]["why"]
    assert "misses comeback" in pairs["misses"][1]["why"]


def test_analyze_writes_explanations_json(setup, tmp_path, monkeypatch, capsys):
    s = setup
    # The 16 test builds are topped up with fresh ones from the same world (not 20,000 here).
    monkeypatch.setattr("apps.analysis.explanations.MIN_EXPLAIN_BUILDS", 64)
    save_primary(tmp_path / "model", s.primary, s.vocab, s.weapon_vocab)
    save_sae(tmp_path / "sae", s.sae)
    (tmp_path / "run.json").write_text(json.dumps({
        "primary_model_dir": str(tmp_path / "model"), "data_source": "synthetic",
        "data_path": "", "num_builds": 80, "seed": 3}))  # 16 test builds: quick
    analyze(tmp_path, top_features=1)
    doc = json.loads((tmp_path / "explanations.json").read_text())
    assert doc["version"] == 1 and len(doc["features"]) == s.sae.hidden_dim
    assert (doc["num_builds"], doc["fresh_builds"]) == (64, 48)
    assert doc["summary"]["ground_truth"] is not None  # synthetic builds carry concepts
    assert sum("rung_curves" in e for e in doc["features"].values()) >= 1
    assert "explanations" in (tmp_path / "report" / "index.html").read_text().lower()
    # The printed line is the summary rounded for people; the file keeps full precision.
    printed = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith("explanations: ")]
    assert printed == [explanations_line(doc["summary"])]


def test_the_printed_explanations_line_is_rounded():
    summary = {"explained": 22, "explained_f1": 0.5, "causal_agreement": 0.9545454545454546,
               "causal_checked": 22, "median_f1_window": 0.8764367816091954}
    assert explanations_line(summary) == (
        "explanations: 22 features with held-out F1 >= 0.5, causal agreement 95.5% (21 of 22 "
        "checked), median F1 in the window 0.876")
    none = {**summary, "causal_agreement": None, "causal_checked": 0, "median_f1_window": None}
    assert explanations_line(none) == (
        "explanations: 22 features with held-out F1 >= 0.5, causal agreement n/a (no explained "
        "feature checked), median F1 in the window n/a (no feature in the window)")
    shared = {**summary, "explained_share": 22 / 30, "nondead": 30}
    assert explanations_line(shared).startswith(
        "explanations: 22 features with held-out F1 >= 0.5 (73.3% of the 30 that fire), causal")


def test_too_few_builds_give_an_empty_document(setup):
    s = setup
    few = s.builds.subset(np.arange(3))
    doc = compute_explanations(s.primary, s.vocab, s.weapon_vocab, s.sae, few, s.pooled[:3],
                               progress=False, min_builds=0)
    assert doc["features"] == {} and doc["summary"]["explained"] == 0 and "note" in doc


def test_fresh_builds_come_only_from_the_world_that_made_the_builds(setup):
    s = setup
    fresh = fresh_builds(s.builds, CONCEPTS, s.weapon_vocab, 50)
    assert len(fresh) == 50 and fresh.concept_names == s.builds.concept_names
    assert np.isin(fresh.weapons, s.weapon_vocab.game_ids).all()
    assert not np.array_equal(fresh.ap, s.builds.ap[:50])  # not the run's own stream
    real = BuildSet(s.builds.weapons, s.builds.ap)  # no concept labels: real data
    assert len(fresh_builds(real, CONCEPTS, s.weapon_vocab, 50)) == 0
    assert len(fresh_builds(s.builds, CONCEPTS[:3], s.weapon_vocab, 50)) == 0  # another set
    assert len(fresh_builds(s.builds, CONCEPTS, s.weapon_vocab, 0)) == 0


def _without_seconds(doc: dict) -> dict:
    out = json.loads(json.dumps(doc))
    del out["summary"]["seconds"]
    return out


@pytest.mark.slow  # explains two SAEs twice
def test_shared_explanation_builds_give_each_sae_its_own_document(setup, monkeypatch):
    """Builds made once (fresh top-up, conditions, split, rung edits) and shared by two SAEs
    give each the document it gets alone; the primary then runs only on the causal edits."""
    import apps.analysis.explanations as explanations_module
    import bridge.causal as causal_module
    from apps.analysis.explanations import explanation_builds

    s = setup
    calls = []
    real = causal_module.pooled_of_builds

    def counted(primary, builds, *args, **kwargs):
        calls.append(len(builds))
        return real(primary, builds, *args, **kwargs)

    monkeypatch.setattr(causal_module, "pooled_of_builds", counted)
    monkeypatch.setattr(explanations_module, "pooled_of_builds", counted)
    other = create_sae(SAEConfig(input_dim=16, expansion_factor=1), seed=7)
    other.set_params({**s.sae.params(), "W_enc": other.params()["W_enc"]})
    settings = dict(curve_features=[0, 3], progress=False, min_builds=300,
                    explain_config=ExplainConfig(min_rule_support=3),
                    causal_config=CausalConfig(per_direction=4, batch_size=512))
    alone, alone_calls = [], []
    for sae in (s.sae, other):
        calls.clear()
        alone.append(compute_explanations(s.primary, s.vocab, s.weapon_vocab, sae, s.builds,
                                          s.pooled, **settings))
        alone_calls.append(list(calls))
    assert alone[0]["fresh_builds"] == 60 and alone[0] != alone[1]
    calls.clear()
    shared = explanation_builds(s.primary, s.vocab, s.weapon_vocab, s.builds, s.pooled,
                                min_builds=300, batch_size=512)
    made_once = list(calls)
    assert shared.fresh == 60 and made_once == [60, len(shared.rungs.pooled)]
    for sae, doc, before in zip((s.sae, other), alone, alone_calls):
        calls.clear()
        got = compute_explanations(s.primary, s.vocab, s.weapon_vocab, sae, s.builds, s.pooled,
                                   shared=shared, **settings)
        assert _without_seconds(got) == _without_seconds(doc)
        assert sorted(calls + made_once) == sorted(before)  # only the causal edits again
    few = s.builds.subset(np.arange(10))
    with pytest.raises(ValueError, match="analyzed"):
        compute_explanations(s.primary, s.vocab, s.weapon_vocab, s.sae, few, s.pooled[:10],
                             shared=shared, **settings)
