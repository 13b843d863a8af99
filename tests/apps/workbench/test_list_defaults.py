"""The feature list's default (the interpretable window, best explained first), its switch
to all features, and search ranking exact name matches first: the page and the API."""

import json
import re

import numpy as np
import pytest
from starlette.testclient import TestClient

from apps.workbench.run_state import RunData
from apps.workbench.server import create_app
from sae_jax.activity import window_mask
from tests.apps.workbench.workbench_fixture import ANALYSIS_BUILDS, explanation, make_run

NUM_FEATURES = 128


@pytest.fixture(scope="module")
def listed(tmp_path_factory):
    """A run whose explanations rank against its scores: ``a`` (the window's lowest score)
    is best explained and detects the concept stealth_slayer; ``b`` (the window's highest
    score) and ``c`` (a rare feature outside the window, best explained of all) have rules
    that mention Stealth Jump."""
    workdir = make_run(tmp_path_factory.mktemp("listed"), explained=False)
    idx = RunData(workdir, num_builds=ANALYSIS_BUILDS).index()  # saved: the app reads it
    freq, score = idx["frequency"], idx["score"]
    window = np.flatnonzero(window_mask(freq))
    window = window[np.argsort(-score[window], kind="stable")]
    rare = np.flatnonzero((freq > 0) & (freq <= 0.01))
    assert len(window) >= 3 and len(rare), "the fixture needs window and rare features"
    ids = {"a": int(window[-1]), "b": int(window[0]), "c": int(rare[0])}
    rules = {"a": ("Ink Saver Main ≥6", 0.9),
             "b": ("Quick Super Jump ≥6 and Stealth Jump", 0.4),
             "c": ("Opening Gambit and no Ninja Squid and Stealth Jump", 0.95)}
    explained = {str(ids[k]): explanation(text, f1) for k, (text, f1) in rules.items()}
    (workdir / "explanations.json").write_text(json.dumps({"version": 1, "summary": {},
                                                           "features": explained}))
    (workdir / "concepts.json").write_text(json.dumps({"rows": [
        {"concept": "stealth_slayer", "positives": 30, "feature": ids["a"], "sae_f1": 0.9,
         "sae_auroc": 0.97}], "summary": {"recovered": 1, "total": 1}}))
    app = create_app(workdir, num_builds=ANALYSIS_BUILDS)
    with TestClient(app) as client:
        yield client, app.state.workbench.run, ids


def _ids(client, **params):
    return [r["id"] for r in client.get("/api/features", params=dict(limit=500, **params))
            .json()["features"]]


def _page_ids(html: str) -> list[int]:
    return [int(m) for m in re.findall(r'<a class="fid" href="/feature/(\d+)"', html)]


def test_api_without_parameters_lists_the_window_best_explained_first(listed):
    client, run, ids = listed
    idx = run.index()
    window = np.flatnonzero(window_mask(idx["frequency"]))
    f1 = np.full(NUM_FEATURES, -1.0)
    f1[ids["a"]], f1[ids["b"]] = 0.9, 0.4  # c is outside the window
    expected = sorted(window.tolist(), key=lambda f: (-f1[f], -idx["score"][f], f))
    answer = client.get("/api/features").json()
    assert answer["scope"] == "window" and answer["sort"] == "f1"
    assert answer["total"] == len(window)
    assert answer["counts"] == {"window": len(window), "all": NUM_FEATURES}
    assert [r["id"] for r in answer["features"]] == expected[:50]
    assert expected[:2] == [ids["a"], ids["b"]]  # explanation F1 over score
    assert all(r["in_window"] for r in answer["features"])


def test_the_page_opens_on_the_same_list_and_switches_to_all(listed):
    client, _, _ = listed
    api = [r["id"] for r in client.get("/api/features").json()["features"]]
    page = client.get("/").text
    assert _page_ids(page) == api
    window = client.get("/api/features").json()["total"]
    count = re.sub(r"\s+", " ", re.search(r'<p id="count".*?</p>', page, re.S).group(0))
    assert f"<b>{window}</b> of {NUM_FEATURES} features in the 1&ndash;30% window" in count
    switch = re.search(r'id="scopeswitch" href="([^"]+)">show all 128<', count).group(1)
    assert "scope=all" in switch
    everything = re.sub(r"\s+", " ", client.get(switch.replace("&amp;", "&")).text)
    assert "all <b>128</b> features" in everything
    assert _page_ids(everything) == [r["id"] for r in client.get(
        "/api/features", params={"scope": "all"}).json()["features"]]
    assert client.get("/api/features", params={"scope": "all"}).json()["total"] == NUM_FEATURES
    # the older spelling of the switch still works
    assert client.get("/api/features?window=0").json()["total"] == NUM_FEATURES
    assert client.get("/api/features?window=1").json()["total"] == window


def test_search_ranks_a_concept_name_above_a_rule_that_mentions_it(listed):
    client, _, ids = listed
    a, b, c = ids["a"], ids["b"], ids["c"]
    # In list order (explanation F1) c comes first, then a, then b.
    assert _ids(client, q="stealt", scope="all")[:3] == [c, a, b]  # partial matches only
    assert _ids(client, q="stealth", scope="all")[:3] == [a, c, b]  # a's concept: a word
    assert _ids(client, q="stealth")[:2] == [a, b]  # the window leaves c out
    assert _ids(client, q="stealth_slayer", scope="all")[0] == a
    assert _ids(client, q="Stealth Jump", scope="all")[:2] == [c, b]  # a term of their rules
    assert c in _ids(client, q="ninja squid", scope="all")  # negated, yet a partial match
    assert _ids(client, q=f"f{b}", scope="all")[0] == b
    page = client.get("/", params={"q": "stealth", "scope": "all"}).text
    assert _page_ids(page)[:3] == [a, c, b]
