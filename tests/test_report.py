"""The HTML feature browser: structure, sections, concept table, no external resources."""

import html
import html.parser
import json

import jax
import numpy as np
import pytest

from primary.model import PrimaryConfig, create_model
from primary.synthetic import generate_builds
from primary.vocab import Vocab, WeaponVocab
from sae_jax.analyze import analyse_features, full_build_inputs, pooled_of_inputs
from sae_jax.model import SAEConfig, create_sae
from sae_jax.report import render_report, token_label, write_report

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
    doc = analyse_features(primary, vocab, sae, builds, pooled, top_features=6)
    doc["title"] = "test report"
    return builds, vocab, weapon_vocab, inputs, doc


def test_full_build_inputs_tokenise_each_build(setup):
    builds, vocab, _, inputs, _ = setup
    for i in range(0, len(builds), 17):
        ids = inputs["tokens"][i][~inputs["key_padding_mask"][i]]
        assert vocab.decode(ids) == builds.tokens(i)
    assert inputs["tokens"].shape[0] == len(builds)
    assert inputs["weapons"].shape == (len(builds), 1)


def test_doc_ranks_and_describes_features(setup):
    builds, _, _, _, doc = setup
    pages = doc["pages"]
    assert 0 < len(pages) <= 6
    scores = [p["score"] for p in pages]
    assert scores == sorted(scores, reverse=True)
    for p in pages:
        assert 0.01 < p["frequency"] < 0.30
        acts = [ex["activation"] for ex in p["top_examples"]]
        assert acts == sorted(acts, reverse=True) and acts[0] == pytest.approx(p["max_act"])
        assert sum(p["hist"]) >= round(p["frequency"] * doc["num_builds"])  # h > 0 vs > 0.01
        assert len(p["promoted"]) == len(p["suppressed"]) > 0
        assert p["steering"] and all(len(s["before"]) == 5 for s in p["steering"])
        assert p["concept"]["name"] in builds.concept_names
        ex = p["top_examples"][0]
        assert ex["abilities"] and sum(ap for _, ap in ex["abilities"]) == 57
    assert doc["concepts"]["summary"]["total"] == len(builds.concept_names)


def test_report_structure(setup, tmp_path):
    builds, _, _, _, doc = setup
    index = write_report(tmp_path / "report", doc)
    assert index.exists() and (tmp_path / "report" / "features.json").exists()
    text = index.read_text()
    assert text.startswith("<!DOCTYPE html>")
    checker = _TagChecker()
    checker.feed(text)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert checker.stack == [], checker.stack
    # Self-contained: only in-page links, no external resources.
    assert all(u.startswith("#") for u in checker.urls), checker.urls[:5]
    assert "http://" not in text and "https://" not in text and "<img" not in text
    # Sections in ranked order, each with its parts.
    positions = [text.index(f'id="f{p["id"]}"') for p in doc["pages"]]
    assert positions == sorted(positions)
    for p, start in zip(doc["pages"], positions):
        end = text.find("</section>", start)
        section = text[start:end]
        for part in ("<svg", "Promotes", "Suppresses", "Top activating builds",
                     "feature set to 0", "feature set to max", "concept:"):
            assert part in section, f"feature {p['id']} lacks {part!r}"
        assert html.escape(p["top_examples"][0]["weapon"]) in section
        assert token_label(p["promoted"][0][0]) in section
    # The concept table names every concept; the filter controls are there.
    concepts_part = text[text.index('id="concepts"'):text.index("Top ")]
    for name in builds.concept_names:
        assert name in concepts_part
    for control in ('id="q"', 'id="fmin"', 'id="fmax"', "function applyFilter"):
        assert control in text
    # Every feature is in the full table.
    assert text.count("<tr data-freq=") == doc["num_features"]
    data = json.loads((tmp_path / "report" / "features.json").read_text())
    assert [p["id"] for p in data["pages"]] == [p["id"] for p in doc["pages"]]


def test_report_escapes_text(setup):
    *_, doc = setup
    doc = dict(doc, title="<script>alert(1)</script>")
    text = render_report(doc)
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;" in text


def test_token_labels():
    assert token_label("swim_speed_up_12") == "Swim Speed Up \u226512"
    assert token_label("ninja_squid") == "Ninja Squid"
    assert token_label("ink_saver_main_3") == "Ink Saver (Main) \u22653"
    assert token_label("<NULL>") == "<NULL>"
