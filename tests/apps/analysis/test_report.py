"""The HTML feature browser: structure, sections, concept table, no external resources."""

import html
import html.parser
import json
import re
from pathlib import Path
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
from apps.analysis.report import (
    RUNG_COLOURS,
    TEMPLATES,
    TICK_CHAR_PX,
    classes_svg,
    histogram_svg,
    render_report,
    report_files,
    rule_claim,
    rung_curves_svg,
    share,
    token_label,
    write_report,
)
from bridge.harvest import pooled_of_inputs
from primary.examples import split_builds
from primary.model import PrimaryConfig, create_model
from primary.model_dir import save_primary
from primary.synthetic import generate_builds
from primary.vocab import BuildError, Vocab, WeaponVocab
from runkit.run_dir import RunDir, RunDirError
from sae_jax.feature_labels import set_label
from sae_jax.model import SAEConfig, create_sae
from sae_jax.rule_search import sentence
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
        # The concept a card names is the concept table's assignment, nothing else.
        named = [r for r in rows if r["feature"] == p["id"]]
        if named:
            assert p["concept"] == {"name": named[0]["concept"], "f1": named[0]["sae_f1"],
                                    "auroc": named[0]["sae_auroc"], "best_detector": True}
        else:
            assert p["concept"] is None
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


def _script_args(text: str, function: str) -> list:
    """The arguments of a report script's one call ``function(...);``."""
    assert text.startswith(function + "(") and text.endswith(");\n"), text[:60]
    return json.loads("[" + text[len(function) + 1:-3] + "]")


def _cards(report: Path) -> dict[int, str]:
    """The card bodies of a written report, by feature id, read from their scripts."""
    cards = {}
    for path in (report / "cards").glob("f*.js"):
        feature, body = _script_args(path.read_text(), "reportCard")
        assert path.name == f"f{feature}.js"
        cards[feature] = body
    return cards


def _rows(text: str) -> dict[int, str]:
    """The rows of an index page (``<details class="feature">``), by feature id."""
    rows = {}
    for m in re.finditer(r'<details class="feature" id="f(\d+)"', text):
        rows[int(m.group(1))] = text[m.start():text.index("</details>", m.start())]
    return rows


def test_report_structure(setup, tmp_path):
    builds = setup.builds
    curves = tmp_path / "curves.png"
    curves.write_bytes(b"\x89PNG\r\n\x1a\n")
    doc = dict(setup.doc, curves_png=str(curves), metrics={"fve": 0.9, "l0": 12.5})
    index = write_report(tmp_path / "report", doc)
    assert index.exists() and (tmp_path / "report" / "features.json").exists()
    text = index.read_text()
    assert text.startswith("<!DOCTYPE html>")
    cards = _cards(index.parent)
    for page in [text, *cards.values()]:
        checker = _TagChecker()
        checker.feed(page)
        checker.close()
        assert not checker.errors, checker.errors[:5]
        assert checker.stack == [], checker.stack
        # Self-contained: in-page links and files beside the page, nothing external.
        for u in checker.urls:
            assert u.startswith("#") or (index.parent / u).is_file(), u
        assert "http://" not in page and "https://" not in page
    assert 'src="curves.png"' in text and "variance explained" in text
    # A row per card in ranked order, each naming its card's script, which holds the card.
    rows = _rows(text)
    assert list(rows) == [p["id"] for p in doc["pages"]] == sorted(cards, key=list(rows).index)
    for p in doc["pages"]:
        assert f'data-card="cards/f{p["id"]}.js"' in rows[p["id"]]
        card = cards[p["id"]]
        for part in ("<svg", "Promotes", "Suppresses", "Top activating builds",
                     "feature set to 0", "feature set to max"):
            assert part in card, f"feature {p['id']} lacks {part!r}"
        assert p["top_examples"][0]["weapon"] in html.unescape(card)
        assert token_label(p["promoted"][0][0]) in html.unescape(card)
    # The concept table names every concept; the filter controls are there.
    concepts_part = text[text.index('id="concepts"'):text.index("Top ")]
    for name in builds.concept_names:
        assert name in concepts_part
    for control in ('id="q"', 'id="fmin"', 'id="fmax"', 'id="order"', 'id="legend"',
                    "function applyFilter", "function sortTable", "function loadCard"):
        assert control in text
    # The inlined script and style are the package files as they are, not HTML-escaped.
    script = text[text.index("<script>") + 8:text.index("</script>")]
    assert script == (TEMPLATES / "report.js").read_text(encoding="utf-8")
    assert "&&" in script and "&amp;&amp;" not in script
    style = text[text.index("<style>") + 7:text.index("</style>")]
    assert style == (TEMPLATES / "report.css").read_text(encoding="utf-8")
    # Every feature is in the full table, as a compact data row (report.TABLE_COLUMNS), in
    # the script the table loads when opened.
    assert 'data-table="table.js"' in text
    (rows,) = _script_args((index.parent / "table.js").read_text(), "reportTable")
    assert len(rows) == doc["num_features"]
    assert [r[0] for r in rows] == [f["id"] for f in doc["features"]]
    assert {r[0] for r in rows if r[9]} == {p["id"] for p in doc["pages"]}
    by_id = {f["id"]: f for f in doc["features"]}
    for r in rows:
        assert r[5] == pytest.approx(by_id[r[0]]["frequency"], abs=1e-6)
        assert r[8] == int(by_id[r[0]]["in_window"])
        assert r[10] == share(by_id[r[0]]["frequency"])  # as its card writes it
    data = json.loads((tmp_path / "report" / "features.json").read_text())
    assert [p["id"] for p in data["pages"]] == [p["id"] for p in doc["pages"]]
    # A second report in the same folder leaves no card of the first behind.
    write_report(tmp_path / "report", dict(doc, pages=doc["pages"][:2]))
    assert set(_cards(index.parent)) == {p["id"] for p in doc["pages"][:2]}


def _with_pages(doc: dict, copies: int) -> dict:
    """``doc`` with its pages repeated ``copies`` times under new ids (and as many more
    features in its table)."""
    pages, features = [], []
    for k in range(copies):
        off = k * doc["num_features"]
        pages += [dict(p, id=p["id"] + off) for p in doc["pages"]]
        features += [dict(f, id=f["id"] + off) for f in doc["features"]]
    return dict(doc, pages=pages, features=features,
                num_features=doc["num_features"] * copies)


def test_first_load_is_the_index_with_a_small_row_per_card(setup, tmp_path):
    """Cards and the full table load on demand: the page opened at first holds a row per
    card, bounded in size, and nothing that grows with the number of features."""
    doc = dict(setup.doc, explanations=_fake_explanations(setup.doc))
    n = len(doc["pages"])
    sizes, cards = {}, {}
    for copies in (1, 4):
        out = tmp_path / f"x{copies}"
        index = write_report(out, _with_pages(doc, copies))
        sizes[copies] = len(index.read_bytes())
        cards[copies] = [len(p.read_bytes()) for p in (out / "cards").glob("*.js")]
        # What the page loads at first: itself, nothing it names as a script or image
        # but the curves (none here).
        assert "<script src" not in index.read_text() and "<img" not in index.read_text()
    per_row = (sizes[4] - sizes[1]) / (3 * n)
    assert per_row <= 1500, f"{per_row:.0f} bytes of index.html per card"
    assert min(cards[1]) > 2 * per_row  # the card's body is not in its row
    assert sizes[1] <= 60_000, sizes
    # The table's rows are not in the page: a table ten times as long leaves it as it was.
    long = dict(doc, features=_with_pages(doc, 10)["features"])
    assert len(render_report(long)) - len(render_report(doc)) <= 8  # the count in a summary


def test_doc_carries_absorption_of_every_rung_and_each_page_its_roles(setup):
    from apps.analysis.rung_absorption import rung_conditions
    from sae_jax.absorption import absorption_roles

    absorption = setup.doc["absorption"]
    rungs = rung_conditions()
    assert [r["concept"] for r in absorption["concepts"]] == [c.name for c in rungs]
    assert [r["family"] for r in absorption["concepts"]] == [c.ability for c in rungs]
    summary = absorption["summary"]
    assert summary["measured"] + summary["few_builds"] + summary["weak_probe"] == len(rungs)
    assert summary["measured"] > 0  # the commonest rungs have builds enough
    for page in setup.doc["pages"]:
        assert page["absorption"] == absorption_roles(absorption, page["id"])
    text = render_report(setup.doc)
    assert "Absorption on the AP rungs" in text
    assert f"<b>{summary['measured']}</b> of {len(rungs)} rungs" in text


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
    # The rungs' absorption is the run's own file, not copied into the report's pages.
    absorption = RunDir(tmp_path).absorption()
    assert len(absorption["concepts"]) == 126 and "summary" in absorption
    assert "absorption" not in json.loads((tmp_path / "report" / "features.json").read_text())
    text = (tmp_path / "report" / "index.html").read_text()
    detectors = {r["feature"] for r in concepts["rows"]}
    detectors |= {f for r in concepts["rows"] if r["pair_better"] for f in r["pair_features"]}
    assert summary["recovered"] <= summary["recovered_with_pairs"] <= summary["total"]
    rows = _rows(text)
    assert 3 <= len(rows) <= 3 + len(detectors)
    assert "Concept recovery" in text
    # The human label is on the labelled feature's row and card, and the store is left as
    # it was.
    labelled = next(iter(rows))
    cards = _cards(tmp_path / "report")
    assert f"Hand-named feature {labelled}<" in rows[labelled]
    assert f"Hand-named feature {labelled}<" in cards[labelled]
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
    assert "Steering as builds" in cards[labelled]


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
    files = report_files(dict(setup.doc, concepts=None, pages=pages))
    text = files["index.html"]
    assert 'id="concepts"' not in text
    assert not any("concept:" in f for f in files.values())
    assert len(_rows(text)) == len(pages)


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


def _plain(text: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", text)).split())


def test_summary_gives_both_dead_counts_in_one_sentence(setup):
    """Dead on the analysis's full builds and dead on the evaluation's partial builds: one
    sentence, each count with the inputs it counts, and neither repeated elsewhere."""
    doc = dict(setup.doc, dead=169, num_builds=2000, num_features=256,
               metrics={"dead_fraction": 31 / 256, "fve": 0.99})
    plain = _plain(render_report(doc))
    sentence = ("169 features never fire on the 2,000 full analysis builds; 31 (12.1%) never "
                "fire on the evaluation's partial builds, the inputs the SAE was trained on.")
    assert sentence in plain
    assert plain.count("never fire") == 2 and plain.count("12.1%") == 1
    assert "dead on the evaluation" not in plain  # not again among the training numbers
    # Without the evaluation's count, the full builds' alone.
    plain = _plain(render_report(dict(doc, dead=1, metrics={})))
    assert "1 feature never fires on the 2,000 full analysis builds." in plain
    assert "partial builds" not in plain


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
    index = write_report(tmp_path / "report", doc)
    text = index.read_text()
    for page in (text, *_cards(index.parent).values()):
        checker = _TagChecker()
        checker.feed(page)
        checker.close()
        assert not checker.errors and checker.stack == []
    row = _rows(text)[first]
    card = html.unescape(_cards(index.parent)[first])
    assert "Rule text 0 (F1 0.10)" in card and "precision 0.50" in card
    assert "Rule text 0 (F1 0.10)" in html.unescape(row)
    assert "turns on in 70%" in card and "turns off in 60%" in card and "agrees" in card
    assert "Lifted 0" in card and "Weapon classes" in card and "AP rung curves" in card
    assert "label: <b>Sneaky <b></b>" in card and "(tactical)" in card
    # The label is escaped, never markup; the search text holds explanation and label.
    assert "Sneaky &lt;b&gt;" in text and "Sneaky &lt;b&gt;" in row
    assert "rule text 0" in row[:row.index(">")].lower()
    (rows,) = _script_args((index.parent / "table.js").read_text(), "reportTable")
    assert "Sneaky <b>" in [r[1] for r in rows]
    assert f'data-f1="{doc["explanations"]["features"][str(second)]["f1"]}"' in text
    assert any("disagrees with the rule" in html.unescape(c)  # odd pages disagree
               for c in _cards(index.parent).values())
    # features.json beside the page keeps the pages, not a copy of the explanations.
    data = json.loads((tmp_path / "report" / "features.json").read_text())
    assert "explanations" not in data and len(data["pages"]) == len(doc["pages"])
    # Phone width: every table sits in a scrolling box.
    for page in (text, *_cards(index.parent).values()):
        assert page.count("<table") == page.count('<div class="scroll"><table')
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


def test_one_frequency_per_card_with_its_base(setup):
    """A row and its card give the feature's frequency once, over the analysis builds, in
    one form: not the explanation's own (its sentence's "fires 5%"), nor another rounding
    in the weapon classes' base rate."""
    doc = dict(setup.doc, explanations=_fake_explanations(setup.doc))
    files = report_files(doc)
    rows = _rows(files["index.html"])
    for p in doc["pages"]:
        shown = share(p["frequency"])
        (_, card), = (_script_args(files[f"cards/f{p['id']}.js"], "reportCard"),)
        for part in (rows[p["id"]], card):
            plain = _plain(part)
            assert plain.count(f"fires on {shown} of 160 analysis builds") == 1, plain
            assert "fires 5%" not in plain
            # Every percentage on the card (causal, classes, co-firing aside) is that one.
            assert re.findall(r"(?:fires on|base) ([\d.]+%)", plain) == [shown] * len(
                re.findall(r"(?:fires on|base) [\d.]+%", plain)), plain
        assert f"base {shown}" in _plain(card)  # the classes' base rate, as written above
    assert share(0.1525) == "15.3%" and share(0.0005) == "0.05%" and share(0.0) == "0.0%"
    assert share(0.4449) == "44.5%" and share(0.0123) == "1.2%" and share(1.0) == "100.0%"


def test_cards_and_concept_table_name_one_assignment(setup, tmp_path):
    """The concept a card names is the concept table's (concepts.json's) detector of it:
    a feature whose own best concept another feature detects better names no concept."""
    rows = setup.doc["concepts"]["rows"]
    pages = setup.doc["pages"]
    # Give the first card the concept it would have as its own best (another feature's).
    other = next(r for r in rows if r["feature"] != pages[0]["id"])
    stale = dict(pages[0], concept={"name": other["concept"], "f1": 0.9, "auroc": 0.9,
                                    "best_detector": False})
    files = report_files(dict(setup.doc, pages=[stale, *pages[1:]]))
    index = files["index.html"]
    table = index[index.index('id="concepts"'):index.index("</table>", index.index(
        'id="concepts"'))]
    by_feature = {}
    for r in rows:
        by_feature.setdefault(r["feature"], r["concept"])
    for p in pages:
        heading = _plain(_rows(index)[p["id"]].split("</h3>")[0])
        named = re.findall(r"concept: (\S+) \(F1", heading)
        assert named == ([by_feature[p["id"]]] if p["id"] in by_feature else []), heading
        assert "concept:" not in _plain(_script_args(files[f"cards/f{p['id']}.js"],
                                                     "reportCard")[1])
    for r in rows:
        assert re.search(rf"<td>{re.escape(r['concept'])}</td><td class=\"num\">\d+</td>\s*"
                         rf"<td>(<a href=\"#f{r['feature']}\">)?{r['feature']}\b", table), r


def _fill_targets(css: str) -> set[str]:
    """The classes (``.name``) and elements whose fill some rule of ``css`` sets."""
    targets = set()
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        if re.search(r"(^|;)\s*fill\s*:", body):
            for selector in selectors.split(","):
                styled = selector.split()[-1]  # the element the rule styles
                classes = re.findall(r"\.([\w-]+)", styled)
                targets |= {"." + c for c in classes} or {styled}
    return targets


def test_rung_legend_entries_show_their_own_colours():
    """Each legend entry is drawn in its line's colour: no rule of the stylesheet sets a
    fill that would override the entry's fill attribute."""
    curves = {a: {"ap": [0, 3, 6, 57], "mean": [0.0, 0.1 * i, 0.2, 0.3], "n": 5}
              for i, a in enumerate(("swim_speed_up", "ink_saver_main", "ninja_squid"))}
    svg = rung_curves_svg(curves)
    entries = re.findall(r"<text ([^>]*)>&#9644; ([^<]*)</text>", svg)
    assert [name for _, name in entries] == ["Swim Speed Up", "Ink Saver (Main)", "Ninja Squid"]
    targets = _fill_targets((TEMPLATES / "report.css").read_text(encoding="utf-8"))
    assert ".tick" in targets  # the rule that greyed the entries is still there for ticks
    for i, (attrs, name) in enumerate(entries):
        assert f'fill="{RUNG_COLOURS[i]}"' in attrs, name
        classes = {"." + c for c in re.search(r'class="([^"]*)"', attrs).group(1).split()}
        assert not classes & targets and "text" not in targets, (name, classes & targets)


def _texts_outside(svg: str) -> list[str]:
    """The labels of an SVG chart that reach outside it (by the report's own estimate of
    a label's width), with where they lie."""
    width = float(re.search(r'<svg[^>]* width="([\d.]+)"', svg).group(1))
    out = []
    for attrs, text in re.findall(r"<text ([^>]*)>([^<]*)</text>", svg):
        x = float(re.search(r'\bx="([-\d.]+)"', attrs).group(1))
        anchor = (re.search(r'text-anchor="(\w+)"', attrs) or [None, "start"])[1]
        size = TICK_CHAR_PX * len(html.unescape(text))
        left = x - size * {"start": 0, "middle": 0.5, "end": 1}[anchor]
        if left < 0 or left + size > width:
            out.append(f"{html.unescape(text)!r} spans {left:.0f}..{left + size:.0f} of {width}")
    return out


def test_chart_labels_stay_inside_their_charts():
    """No tick label is clipped: the histogram's last edge, long numbers, the base rate
    near either end, the largest AP."""
    edges = np.geomspace(0.01, 123.4, 31).tolist()
    counts = np.arange(30) * 500
    svg = histogram_svg(counts, edges)
    assert "1.2e+02" in svg  # the last edge, at the right end of the axis
    assert not _texts_outside(svg), _texts_outside(svg)
    for base in (0.001, 0.5, 0.999):
        classes = [{"class": "splatling", "rate": 0.999, "support": 10},
                   {"class": "brella", "rate": 0.001, "support": 10}]
        svg = classes_svg(classes, base)
        assert not _texts_outside(svg), _texts_outside(svg)
    curves = {"swim_speed_up": {"ap": [0, 3, 57], "mean": [0.0, 12345.0, 0.1], "n": 5}}
    svg = rung_curves_svg(curves)
    assert ">57 AP<" in svg and not _texts_outside(svg), _texts_outside(svg)


def test_rule_claim_drops_only_the_sentence_frequency():
    """A card shows an explanation's sentence without its frequency, whatever the rule."""
    texts = ["Ninja Squid", "Swim Speed Up (fast) \u22653"]
    for rule, level, shown in (
            ([[0, 1]], None, "Ninja Squid and Swim Speed Up (fast) \u22653 (F1 0.93)"),
            ([[0], [1]], 1.6, "Ninja Squid or Swim Speed Up (fast) \u22653 (F1 0.93 at "
                              "activation \u2265 1.6)")):
        for frequency in (0.11, 0.004):
            said = sentence(rule, texts, 0.93, frequency, level=level)
            assert "fires" in said and rule_claim({"sentence": said}) == shown
    assert rule_claim({"sentence": "no rule: never active on the fit split (fires 4%)"}) == (
        "no rule: never active on the fit split")
    assert rule_claim({"sentence": "Fires on builds with a."}) == "Fires on builds with a."


def test_a_card_read_on_partial_builds_says_so_and_shows_a_broader_rule(setup):
    """A feature explained on partial builds: its card names the inputs and both firing
    rates, marks a rule broader than the feature, and gives the full builds' rule beside
    it; the summary counts the explained share; the concept table shows the full builds'
    rule (the one the ground-truth check judges)."""
    doc = dict(setup.doc, explanations=_fake_explanations(setup.doc))
    first, second = doc["pages"][0]["id"], doc["pages"][1]["id"]
    features = doc["explanations"]["features"]
    full_rule = {"rule": [["c"]], "rule_text": "Full rule 0", "precision": 0.8, "recall": 0.7,
                 "f1": 0.75}
    features[str(first)].update(
        distribution="partial", frequency_partial=0.2, frequency_full=0.01, precision=0.3,
        recall=0.9, broader=True, restored=False,
        by_distribution={"partial": {}, "full": full_rule},
        top_partial=[{"activation": 0.75, "weapon": "Splat Charger", "game_id": 2010,
                      "tokens": ["swim_speed_up_21"]},
                     {"activation": 0.5, "weapon": "Splat Charger", "game_id": 2010,
                      "tokens": []}])
    features[str(second)].update(distribution="full", broader=False, restored=True,
                                 frequency_partial=0.1, frequency_full=0.1)
    doc["explanations"]["summary"].update(
        explained=3, nondead=4, explained_share=0.75, explained_f1=0.5, broader=1,
        by_distribution={"full": {"features": 3}, "partial": {"features": 1}})
    files = report_files(doc)
    card = _plain(_script_args(files[f"cards/f{first}.js"], "reportCard")[1])
    assert "read on partial builds (fires on 20.0% of partial builds, 1.0% of full builds)" \
        in card
    assert "precision 0.30 · recall 0.90" in card and "broader than the feature" in card
    assert "on full builds: Full rule 0 (precision 0.80, recall 0.70, F1 0.75)" in card
    assert "Top activating partial builds" in card
    # Cells run together in the plain text: activation, weapon, tokens (none: empty input).
    assert "0.750Splat ChargerSwim Speed Up ≥21" in card and "0.500Splat Chargernone" in card
    other = _plain(_script_args(files[f"cards/f{second}.js"], "reportCard")[1])
    assert "read on full builds" in other and "broader than the feature" not in other
    assert "precision restored by a longer conjunction" in other
    assert "Top activating partial builds" not in other
    summary = _plain(files["index.html"].split('class="summary"')[1].split("</p>")[0])
    assert ("of the explained features. 3 of the 4 features that fire (75%) have a rule of "
            "held-out F1 ≥ 0.5 on the builds they fire on (1 read on partial builds") in summary
    assert "1 of those rules are broader than their feature" in summary
    detector = doc["concepts"]["rows"][0]["feature"]
    features[str(detector)] = dict(features[str(first)], rule_text="Partial rule")
    table = report_files(doc)["index.html"].split('id="concepts"')[1].split("</table>")[0]
    assert "Full rule 0" in table and "Partial rule" not in table
