"""The HTML feature browser: structure, sections, concept table, no external resources."""

import html
import html.parser
import json
import re
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from apps.analysis import pipeline as analyze_module
from apps.analysis.pipeline import (
    analyze,
    analyze_features,
    full_build_inputs,
    known_builds,
)
from apps.analysis.report import TEMPLATES, render_report, token_label, write_report
from bridge.harvest import pooled_of_inputs
from primary.examples import split_builds
from primary.model import PrimaryConfig, create_model
from primary.model_dir import save_primary
from primary.synthetic import generate_builds
from primary.vocab import BuildError, Vocab, WeaponVocab
from runkit.run_dir import RunDir, RunDirError
from sae_jax.feature_labels import set_label
from sae_jax.model import SAEConfig, create_sae
from sae_jax.sae_dir import save_sae

VOID = {"meta", "br", "input", "rect", "line", "img", "link", "hr"}


class _TagChecker(html.parser.HTMLParser):
    """Counts opened/closed elements and collects every URL-bearing attribute."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.urls, self.ids = [], [], [], []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src") and v:
                self.urls.append(v)
            if k == "id":
                self.ids.append(v)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()


@pytest.fixture(scope="module")
def setup():
    builds = generate_builds(160, seed=3)
    vocab = Vocab.canonical()
    weapon_vocab = WeaponVocab.from_game_ids(builds.weapons)
    cfg = PrimaryConfig(vocab_size=len(vocab), weapon_vocab_size=len(weapon_vocab),
                        embedding_dim=8, hidden_dim=16, num_layers=1, num_heads=2,
                        num_inducing_points=4, pad_token_id=vocab.pad_id)
    primary = create_model(cfg, seed=0)
    inputs = full_build_inputs(builds, vocab, weapon_vocab)
    pooled = pooled_of_inputs(primary, inputs, batch_size=64)
    sae = create_sae(SAEConfig(input_dim=16, expansion_factor=3), seed=1)
    # Bias each feature so it fires on 3%..25% of builds: a ranking window to fill.
    params = sae.params()
    pre = np.asarray(pooled @ np.asarray(params["W_enc"]))
    target = np.random.default_rng(0).uniform(0.03, 0.25, size=pre.shape[1])
    params["b_enc"] = jax.numpy.asarray(
        -np.array([np.quantile(pre[:, j], 1 - t) for j, t in enumerate(target)]))
    sae.set_params(params)
    doc = analyze_features(primary, vocab, sae, builds, pooled, top_features=6)
    doc["title"] = "test report"
    return SimpleNamespace(builds=builds, vocab=vocab, weapon_vocab=weapon_vocab, inputs=inputs,
                           doc=doc, primary=primary, sae=sae, pooled=pooled)


def test_full_build_inputs_tokenise_each_build(setup):
    builds, vocab, inputs = setup.builds, setup.vocab, setup.inputs
    for i in range(0, len(builds), 17):
        ids = inputs["tokens"][i][~inputs["key_padding_mask"][i]]
        assert vocab.decode(ids) == builds.tokens(i)
    assert inputs["tokens"].shape[0] == len(builds)
    assert inputs["weapons"].shape == (len(builds), 1)


def test_known_builds_drops_unknown_weapons(setup):
    builds, vocab = setup.builds, setup.vocab
    kept_weapons = np.unique(builds.weapons)[::2]
    small = WeaponVocab.from_game_ids(kept_weapons)
    kept = known_builds(builds, vocab, small)
    assert len(kept) == int(np.isin(builds.weapons, kept_weapons).sum()) < len(builds)
    assert np.isin(kept.weapons, kept_weapons).all()
    assert known_builds(builds, vocab, setup.weapon_vocab) is builds
    with pytest.raises(BuildError, match="none of the"):
        known_builds(builds, vocab, WeaponVocab.from_game_ids([99999]))


def test_doc_ranks_and_describes_features(setup):
    builds, doc = setup.builds, setup.doc
    pages = doc["pages"]
    top = pages[:doc["num_top"]]
    assert 0 < len(top) <= 6
    assert [p["rank"] for p in top] == list(range(1, len(top) + 1))
    scores = [p["score"] for p in top]
    assert scores == sorted(scores, reverse=True)
    # After the top come the concept detectors that missed the cut (single features, and
    # the two of each pair that beats its concept's single feature), and nothing else.
    rows = doc["concepts"]["rows"]
    detectors = {r["feature"] for r in rows}
    detectors |= {f for r in rows if r["pair_better"] for f in r["pair_features"]}
    assert {p["id"] for p in pages[len(top):]} <= detectors
    assert detectors <= {p["id"] for p in pages} | {
        f["id"] for f in doc["features"] if f["max_act"] == 0}
    for p in pages:
        assert p["rank"] is None or 0.01 < p["frequency"] < 0.30
        acts = [ex["activation"] for ex in p["top_examples"]]
        assert acts == sorted(acts, reverse=True) and acts[0] == pytest.approx(p["max_act"])
        assert sum(p["hist"]) >= round(p["frequency"] * doc["num_builds"])  # h > 0 vs > 0.01
        assert p["promoted"] and p["suppressed"]
        assert all(v > 0 for _, v in p["promoted"]) and all(v < 0 for _, v in p["suppressed"])
        assert p["steering"] and all(len(s["before"]) == 5 for s in p["steering"])
        assert p["concept"]["name"] in builds.concept_names
        ex = p["top_examples"][0]
        assert ex["abilities"] and sum(ap for _, ap in ex["abilities"]) == 57
    assert doc["concepts"]["summary"]["total"] == len(builds.concept_names)


def _check_coactive(doc, fired, allowed):
    freq = fired.mean(0)
    for p in doc["pages"]:
        f = p["id"]
        for g, ratio in p["coactive"]:
            assert g != f and g in allowed and 0 < freq[g] < 0.30
            expect = (fired[:, f] & fired[:, g]).sum() / fired[:, f].sum()
            assert ratio == pytest.approx(expect)


def test_coactivation_lists_match_numpy(setup):
    h = np.concatenate([np.asarray(b)[v] for b, v in
                        analyze_module.sae_activations(setup.sae, setup.pooled)])
    fired = h > 0.01  # active as sae_jax.activity defines it
    _check_coactive(setup.doc, fired, set(range(h.shape[1])))
    assert any(p["coactive"] for p in setup.doc["pages"])


def test_histogram_spans_the_clip_or_the_data(setup):
    """A clipped SAE's histogram ends at its clip; an unclipped one's at its largest
    activation (not at an unused clip_max), and every positive activation is counted."""
    assert setup.doc["hist_edges"][-1] == pytest.approx(setup.sae.config.clip_max)
    sae = create_sae(SAEConfig(input_dim=16, expansion_factor=3, architecture="topk", k=5,
                               clip_max=6.0, clip=False), seed=2)
    params = sae.params()
    params["W_enc"] = params["W_enc"] * 40.0  # activations past 6
    sae.set_params(params)
    doc = analyze_features(setup.primary, setup.vocab, sae, setup.builds, setup.pooled,
                           top_features=2)
    h = np.concatenate([np.asarray(b)[v] for b, v in
                        analyze_module.sae_activations(sae, setup.pooled)])
    assert h.max() > 6.0 and doc["clip_max"] is None
    assert doc["hist_edges"][-1] == pytest.approx(float(h.max()))
    for p in doc["pages"]:
        assert sum(p["hist"]) == int((h[:, p["id"]] > 0).sum())


def test_report_structure(setup, tmp_path):
    builds = setup.builds
    curves = tmp_path / "curves.png"
    curves.write_bytes(b"\x89PNG\r\n\x1a\n")
    doc = dict(setup.doc, curves_png=str(curves), metrics={"fve": 0.9, "l0": 12.5})
    index = write_report(tmp_path / "report", doc)
    assert index.exists() and (tmp_path / "report" / "features.json").exists()
    text = index.read_text()
    assert text.startswith("<!DOCTYPE html>")
    checker = _TagChecker()
    checker.feed(text)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert checker.stack == [], checker.stack
    # Self-contained: in-page links and files beside the page, nothing external.
    for u in checker.urls:
        assert u.startswith("#") or (index.parent / u).is_file(), u
    assert "http://" not in text and "https://" not in text
    assert 'src="curves.png"' in text and "variance explained" in text
    # Sections in ranked order, each with its parts.
    positions = [text.index(f'id="f{p["id"]}"') for p in doc["pages"]]
    assert positions == sorted(positions)
    for p, start in zip(doc["pages"], positions):
        end = text.find("</section>", start)
        section = text[start:end]
        for part in ("<svg", "Promotes", "Suppresses", "Top activating builds",
                     "feature set to 0", "feature set to max", "concept:"):
            assert part in section, f"feature {p['id']} lacks {part!r}"
        assert p["top_examples"][0]["weapon"] in html.unescape(section)
        assert token_label(p["promoted"][0][0]) in html.unescape(section)
    # The concept table names every concept; the filter controls are there.
    concepts_part = text[text.index('id="concepts"'):text.index("Top ")]
    for name in builds.concept_names:
        assert name in concepts_part
    for control in ('id="q"', 'id="fmin"', 'id="fmax"', 'id="order"', 'id="legend"',
                    "function applyFilter", "function sortTable"):
        assert control in text
    # The inlined script and style are the package files as they are, not HTML-escaped.
    script = text[text.index("<script>") + 8:text.index("</script>")]
    assert script == (TEMPLATES / "report.js").read_text(encoding="utf-8")
    assert "&&" in script and "&amp;&amp;" not in script
    style = text[text.index("<style>") + 7:text.index("</style>")]
    assert style == (TEMPLATES / "report.css").read_text(encoding="utf-8")
    # Every feature is in the full table, as a compact data row (report.TABLE_COLUMNS).
    start = text.index('<script type="application/json" id="table-data">')
    rows = json.loads(text[text.index(">", start) + 1:text.index("</script>", start)])
    assert len(rows) == doc["num_features"]
    assert [r[0] for r in rows] == [f["id"] for f in doc["features"]]
    assert {r[0] for r in rows if r[9]} == {p["id"] for p in doc["pages"]}
    by_id = {f["id"]: f for f in doc["features"]}
    for r in rows:
        assert r[5] == pytest.approx(by_id[r[0]]["frequency"], abs=1e-6)
        assert r[8] == int(by_id[r[0]]["in_window"])
    data = json.loads((tmp_path / "report" / "features.json").read_text())
    assert [p["id"] for p in data["pages"]] == [p["id"] for p in doc["pages"]]


def test_analyze_workdir_end_to_end(setup, tmp_path):
    """analyze() on a run directory: rebuilds the test split, writes concepts.json and
    the report, returns the concept summary."""
    builds = setup.builds
    save_primary(tmp_path / "model", setup.primary, setup.vocab, setup.weapon_vocab)
    save_sae(tmp_path / "sae", setup.sae)
    (tmp_path / "run.json").write_text(json.dumps({
        "primary_model_dir": str(tmp_path / "model"), "data_source": "synthetic",
        "data_path": "", "num_builds": len(builds), "seed": 3}))
    for f in range(setup.sae.hidden_dim):  # whichever features are shown carry a label
        set_label(RunDir(tmp_path).labels_path, f, f"Hand-named feature {f}", category="tactical")
    summary = analyze(tmp_path, top_features=3)
    concepts = json.loads((tmp_path / "concepts.json").read_text())
    assert summary == concepts["summary"]
    _, _, test_idx = split_builds(len(builds), 3)
    assert summary["num_builds"] == len(test_idx)
    assert summary["total"] == len(builds.concept_names)
    assert {"concept", "feature", "sae_f1", "sae_auroc", "neuron", "neuron_f1",
            "neuron_sign"} <= set(concepts["rows"][0])
    text = (tmp_path / "report" / "index.html").read_text()
    detectors = {r["feature"] for r in concepts["rows"]}
    detectors |= {f for r in concepts["rows"] if r["pair_better"] for f in r["pair_features"]}
    assert summary["recovered"] <= summary["recovered_with_pairs"] <= summary["total"]
    assert 3 <= text.count('<section class="feature"') <= 3 + len(detectors)
    assert "Concept recovery" in text
    # The human label is on the labelled feature's card, and the store is left as it was.
    start = text.index('<section class="feature"')
    labelled = int(text[text.index('id="f', start) + 5:].split('"')[0])
    assert f"Hand-named feature {labelled}<" in text[start:text.index("</section>", start)]
    assert json.loads((tmp_path / "feature_labels.json").read_text())[str(labelled)][
        "name"] == f"Hand-named feature {labelled}"
    # The first card shows its top build completed as is, with the feature at 0 and at max:
    # twelve slots, every column a legal build that keeps the observed mains.
    data = json.loads((tmp_path / "report" / "features.json").read_text())
    steered = data["pages"][0]["steered_builds"][0]
    assert len(steered["rows"]) == 12
    for column in ("before", "zero", "max"):
        ap = {}
        for row in steered["rows"]:
            ap[row[column]] = ap.get(row[column], 0) + (10 if row["slot"].endswith("main") else 3)
        assert sum(ap.values()) == 57
        assert all(ap.get(a, 0) >= v for a, v in steered["observed"].items())
        mains = [r[column] for r in steered["rows"] if r["slot"].endswith("main")]
        subs = [r[column] for r in steered["rows"] if not r["slot"].endswith("main")]
        assert legal_slots(mains, subs), column
    assert "Steering as builds" in text


def legal_slots(mains, subs) -> bool:
    """Slots by ability name -> is it a legal build (primary.builds.check_slots_legal)?"""
    from primary.builds import check_slots_legal
    from primary.vocab import ABILITY_INDEX

    return bool(check_slots_legal(np.array([[ABILITY_INDEX[a] for a in mains]]),
                                  np.array([[ABILITY_INDEX[a] for a in subs]]))[0])


def test_analyze_refuses_a_directory_without_run_json(tmp_path):
    with pytest.raises(RunDirError, match="has no run.json: not an SAE run directory"):
        analyze(tmp_path)


def test_report_without_concepts(setup):
    """Real data carries no planted concepts: no table, no badges, the rest unchanged."""
    pages = [dict(p, concept=None) for p in setup.doc["pages"]]
    text = render_report(dict(setup.doc, concepts=None, pages=pages))
    assert 'id="concepts"' not in text and "concept:" not in text
    assert text.count('<section class="feature"') == len(pages)


def test_report_escapes_text(setup):
    doc = dict(setup.doc, title="<script>alert(1)</script>")
    text = render_report(doc)
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;" in text


def test_token_labels():
    assert token_label("swim_speed_up_12") == "Swim Speed Up \u226512"
    assert token_label("ninja_squid") == "Ninja Squid"
    assert token_label("ink_saver_main_3") == "Ink Saver (Main) \u22653"
    assert token_label("<NULL>") == "<NULL>"


def test_summary_reconciles_dead_counts_of_full_and_partial_builds(setup):
    doc = dict(setup.doc, dead=84, num_features=256, metrics={"dead_fraction": 0.0})
    text = render_report(doc)
    assert "84 never fire (dead)" in text
    assert "partial builds (the inputs the SAE was trained on) 0 are dead" in text
    assert "the other 84 silent features fire only on partial builds" in text
    same = render_report(dict(doc, metrics={"dead_fraction": 84 / 256}))
    assert "partial builds" not in same.split("<h2>")[0]


def _fake_explanations(doc):
    """An explanations.json-shaped dict for every shown feature, with distinct values."""
    features = {}
    for i, p in enumerate(doc["pages"]):
        features[str(p["id"])] = {
            "rule": [[f"cond{i}"]], "rule_text": f"Rule text {i}",
            "sentence": f"Rule text {i} (F1 0.{i + 1}0, fires 5%)",
            "precision": 0.5, "recall": 0.25, "f1": (i + 1) / 10, "frequency": p["frequency"],
            "lifts": [{"condition": "c", "text": f"Lifted {i}", "lift": 3.0, "precision": 0.4,
                       "support": 9}],
            "causal": {"add": {"n": 10, "mean_change": 0.5, "turned_on": 0.7},
                       "remove": {"n": 8, "mean_change": -0.4, "turned_off": 0.6},
                       "agrees": i % 2 == 0},
            "classes": [{"class": "charger", "rate": 0.4, "base": p["frequency"], "lift": 2.0,
                         "support": 20}],
            "weapons": [{"weapon": "Splat Charger", "game_id": 2010, "rate": 0.5, "lift": 3.0,
                         "support": 4}],
            "rung_curves": {"swim_speed_up": {"ap": [0, 3, 6, 12], "mean": [0.0, 0.1, 0.3, 0.9],
                                              "n": 5}},
        }
    return {"version": 1, "features": features,
            "summary": {"median_f1_window": 0.77, "causal_agreement": 0.9, "explained": 3,
                        "ground_truth": None}}


def test_report_shows_explanations_labels_and_sorts(setup, tmp_path):
    doc = dict(setup.doc, explanations=_fake_explanations(setup.doc))
    first, second = doc["pages"][0]["id"], doc["pages"][1]["id"]
    doc["labels"] = {str(first): {"name": "Sneaky <b>", "category": "tactical",
                                  "notes": "found by hand", "timestamp": "t"}}
    text = render_report(doc)
    checker = _TagChecker()
    checker.feed(text)
    checker.close()
    assert not checker.errors and checker.stack == []
    start = text.index(f'id="f{first}"')
    card = html.unescape(text[start:text.index("</section>", start)])
    assert "Rule text 0 (F1 0.10, fires 5%)" in card and "precision 0.50" in card
    assert "turns on in 70%" in card and "turns off in 60%" in card and "agrees" in card
    assert "Lifted 0" in card and "Weapon classes" in card and "AP rung curves" in card
    assert "label: <b>Sneaky <b></b>" in card and "(tactical)" in card
    # The label is escaped, never markup; the search text holds explanation and label.
    assert "Sneaky &lt;b&gt;" in text
    # The table's data cannot close its script element, whatever a label says.
    table_json = text[text.index('id="table-data">'):]
    assert "Sneaky \\u003cb\\u003e" in table_json[:table_json.index("</script>")]
    assert f'data-f1="{doc["explanations"]["features"][str(second)]["f1"]}"' in text
    assert "rule text 0" in text[start - 400:start + 400].lower()
    assert "disagrees with the rule" in html.unescape(text)  # odd pages disagree
    # features.json beside the page keeps the pages, not a copy of the explanations.
    write_report(tmp_path / "report", doc)
    data = json.loads((tmp_path / "report" / "features.json").read_text())
    assert "explanations" not in data and len(data["pages"]) == len(doc["pages"])
    # Phone width: every table sits in a scrolling box.
    assert text.count("<table") == text.count('<div class="scroll"><table')
    # The summary's sentences stay apart where a block of the template starts one.
    summary = html.unescape(re.sub(r"<[^>]+>", "", text[text.index('class="summary"'):
                                                       text.index("</p>", text.index(
                                                           'class="summary"'))]))
    assert "frequency. Explanations: median held-out F1 0.77" in " ".join(summary.split())
    if doc.get("concepts"):  # ... and in the concept section's, with a ground-truth share
        gt = {"matched": 2, "total": 3, "concepts": []}
        doc["explanations"]["summary"]["ground_truth"] = gt
        plain = " ".join(html.unescape(re.sub(r"<[^>]+>", "", render_report(doc))).split())
        assert ". The explanation of a recovered concept's feature names" in plain
        assert "one AP rung) for 2/3." in plain
