"""The workbench server (apps.serve): JSON API, pages, labels, the build lab, bad input."""

import html.parser
import json
import re
import threading

import jax.numpy as jnp
import numpy as np
import pytest
from starlette.testclient import TestClient

from apps.workbench.lab import BEAM_SIZE, complete_lab, complete_labs, lab_request
from apps.workbench.run_state import COMPLETION_CACHE, RunData
from apps.workbench.server import create_app
from bridge.steered_completion import steered_builds
from primary.vocab import ABILITIES
from runkit.run_dir import RunDir
from sae_jax.feature_labels import read_labels
from sae_jax.model import encode
from tests.apps.workbench.workbench_fixture import (
    ANALYSIS_BUILDS,
    BROADER,
    EXPLAINED,
    make_run,
    scores_apart,
)

NUM_FEATURES = 128  # demo_small's SAE: 32 -> 128


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    workdir = make_run(tmp_path_factory.mktemp("run"))
    app = create_app(workdir, num_builds=ANALYSIS_BUILDS)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, app.state.workbench.run, workdir


def _lab_case(client):
    """A weapon and partial build, and the feature most active on it."""
    body = {"weapon": "Splattershot", "abilities": {"swim_speed_up": 10, "ink_saver_main": 6}}
    out = client.post("/api/complete", json=body).json()
    return body, out


def test_startup_loads_nothing_and_says_what_is_missing(tmp_path):
    workdir = make_run(tmp_path / "run", explained=False)
    app = create_app(workdir)
    run = app.state.workbench.run
    with TestClient(app) as client:
        info = client.get("/api/run").json()
    assert run._models is None and run._index is None  # lazy: nothing heavy at startup
    assert info["num_features"] == NUM_FEATURES
    assert any("python -m apps.analyze" in m for m in info["missing"])


def test_list_sorts_pages_and_filters(served):
    client, run, _ = served
    first = client.get("/api/features?scope=all&sort=score&limit=20").json()
    assert first["total"] == NUM_FEATURES
    scores = [r["score"] for r in first["features"]]
    assert scores == sorted(scores, reverse=True)
    second = client.get("/api/features?scope=all&sort=score&limit=20&offset=20").json()
    assert not {r["id"] for r in first["features"]} & {r["id"] for r in second["features"]}
    assert second["features"][0]["score"] <= scores[-1]
    by_freq = client.get("/api/features?scope=all&sort=frequency&limit=500").json()["features"]
    freqs = [r["frequency"] for r in by_freq]
    assert freqs == sorted(freqs, reverse=True) and len(by_freq) == NUM_FEATURES
    window = client.get("/api/features?scope=all&fmin=0.01&fmax=0.3&limit=500").json()
    expected = np.flatnonzero((run.index()["frequency"] >= 0.01)
                              & (run.index()["frequency"] <= 0.3))
    assert sorted(r["id"] for r in window["features"]) == expected.tolist()
    assert client.get(f"/api/features?scope=all&arch={run.architecture}").json()["total"] == \
        NUM_FEATURES
    assert client.get("/api/features?scope=all&arch=other").json()["total"] == 0


def test_search_finds_explanation_token_and_id(served):
    client, _, _ = served
    feature, text = next(iter(EXPLAINED.items()))
    hits = client.get("/api/features", params={"q": text.lower(), "scope": "all"}).json()[
        "features"]
    assert [r["id"] for r in hits] == [feature] and hits[0]["explanation"] == text
    by_f1 = client.get("/api/features?scope=all&sort=f1&limit=2").json()["features"]
    assert [r["id"] for r in by_f1] == [9, 5]  # explanation F1 0.6, 0.5
    row = client.get("/api/features?scope=all&q=f17").json()["features"]
    assert [r["id"] for r in row] == [17]
    token = row[0]["tokens"][0]
    hits = client.get("/api/features", params={"q": token, "limit": 500, "scope": "all"}).json()[
        "features"]
    assert 17 in [r["id"] for r in hits]


def test_feature_page_of_any_feature_matches_the_sae(served):
    client, run, _ = served
    idx = run.index()
    feature = int(np.argsort(-idx["frequency"])[3])  # a live feature
    doc = client.get(f"/api/features/{feature}").json()
    page = doc["page"]
    assert page["id"] == feature and len(page["top_examples"]) > 0
    _, pooled = run.builds()
    _, _, _, sae = run.models()
    h = np.asarray(encode(sae.params(), jnp.asarray(pooled), sae.config.encoder)[1])[:, feature]
    acts = [ex["activation"] for ex in page["top_examples"]]
    np.testing.assert_allclose(acts, np.sort(h)[::-1][:len(acts)], rtol=1e-5)
    assert acts == sorted(acts, reverse=True)
    assert page["frequency"] == pytest.approx(float((h > 0.01).mean()))
    assert page["steered_builds"] and len(page["steered_builds"][0]["rows"]) == 12
    assert all(v > 0 for _, v in page["promoted"]) and all(v < 0 for _, v in page["suppressed"])


def test_feature_outside_the_report_gets_co_activations_and_steering(served):
    client, run, workdir = served
    shown = {p["id"] for p in run.report_doc().get("pages", [])}  # none: not analyzed
    idx = run.index()
    live = (idx["frequency"] > 0) & (idx["frequency"] < 0.3)  # neither dead nor dense
    feature = next(int(f) for f in np.argsort(-idx["frequency"]) if live[f] and f not in shown)
    page = client.get(f"/api/features/{feature}").json()["page"]
    _, pooled = run.builds()
    _, _, _, sae = run.models()
    fired = np.asarray(encode(sae.params(), jnp.asarray(pooled), sae.config.encoder)[1]) > 0.01
    ratio = (fired[:, feature, None] & fired).sum(0) / fired[:, feature].sum()
    ratio[feature] = 0
    ratio[~live] = 0
    expect = np.sort(ratio[ratio > 0])[::-1][:5]
    assert page["coactive"], "a live feature co-fires with some other"
    np.testing.assert_allclose([r for _, r in page["coactive"]], expect, rtol=1e-6)
    for g, r in page["coactive"]:
        assert r == pytest.approx(ratio[g]) and live[g] and g != feature
    # ... and its steering table: the model's predictions on its top builds, the feature
    # set to 0 and to its maximum (as the report's cards have it).
    rows = [ex["row"] for ex in page["top_examples"]]
    assert page["steering"] and [s["row"] for s in page["steering"]] == rows[:len(
        page["steering"])]
    for s in page["steering"]:
        assert s["before"] and set(s["zero"]) == set(s["max"]) == {"top", "entered", "left",
                                                                 "rose", "fell"}


def test_label_is_saved_searched_and_removed(served):
    client, _, workdir = served
    r = client.post("/api/features/7/label", json={"name": "Zebra stacker",
                                                   "category": "tactical", "notes": "n"})
    assert r.status_code == 200, r.text
    assert read_labels(RunDir(workdir).labels_path)[7].name == "Zebra stacker"
    hits = client.get("/api/features?scope=all&q=zebra").json()["features"]
    assert [h["id"] for h in hits] == [7] and hits[0]["label"] == "Zebra stacker"
    assert "Zebra stacker" in client.get("/feature/7").text
    assert client.delete("/api/features/7/label").status_code == 200
    assert 7 not in read_labels(RunDir(workdir).labels_path)
    assert client.get("/api/features?scope=all&q=zebra").json()["total"] == 0


def test_complete_is_legal_and_matches_steered_builds(served):
    client, run, _ = served
    body, out = _lab_case(client)
    build = out["build"]
    assert sum(build["ap"].values()) == 57
    assert build["ap"]["swim_speed_up"] >= 10 and build["ap"]["ink_saver_main"] >= 6
    probs = [p["p"] for p in out["probabilities"]]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    primary, vocab, weapon_vocab, sae = run.models()
    given = ["swim_speed_up_3", "swim_speed_up_6", "ink_saver_main_3", "ink_saver_main_6"]
    tokens = np.array([[vocab.token_to_id[t] for t in given]], np.int32)
    weapons = weapon_vocab.encode_game_ids(np.array([build["weapon"]]))[:, None]
    logits = np.asarray(primary(jnp.asarray(tokens), jnp.asarray(weapons, jnp.int32),
                                jnp.zeros(tokens.shape, bool)))[0]
    top = out["probabilities"][0]
    assert top["p"] == pytest.approx(1 / (1 + np.exp(-logits[vocab.token_to_id[top["token"]]])),
                                     rel=1e-4)
    assert {p["token"] for p in out["probabilities"] if p["observed"]} <= set(given)
    active = out["active_features"]
    assert active and all(f["activation"] > 0.01 or f["unedited"] > 0.01 for f in active)
    feature = active[0]["feature"]
    edited = client.post("/api/complete", json=dict(
        body, edits=[{"feature": feature, "value": 0}])).json()
    direct = steered_builds(primary, sae, vocab, weapon_vocab, body["weapon"],
                            body["abilities"], feature, 0.0, fixed_width=True)
    assert edited["build"]["pieces"] == direct["after"]["pieces"]
    # a lone request, batched on its own, computes exactly what the steered completion does
    assert edited["build"]["score"] == direct["after"]["score"]
    assert edited["before"]["pieces"] == direct["before"]["pieces"] == build["pieces"]
    assert edited["diff"]["changed_slots"] == direct["diff"]["changed_slots"]
    zeroed = {f["feature"]: f for f in edited["active_features"]}
    assert zeroed[feature]["activation"] == 0 and zeroed[feature]["unedited"] > 0


# Two plain builds and two with a feature set: batched, one call for the four plain
# completions and one for the two steered ones.
BATCH_BODIES = [
    {"weapon": "Splat Roller", "abilities": {}},
    {"weapon": "Luna Blaster", "abilities": {"ninja_squid": 10}},
    {"weapon": "Splattershot", "abilities": {"stealth_jump": 10},
     "edits": [{"feature": 7, "value": 3.0}]},
    {"weapon": "Splat Charger", "abilities": {"quick_respawn": 13, "comeback": 10},
     "edits": [{"feature": 100, "value": 2.5}]},
]


def test_batched_completions_are_the_single_ones(served):
    _, run, _ = served
    reqs = [lab_request(b, run) for b in BATCH_BODIES]
    run.completions.clear()
    alone = [complete_lab(run, r) for r in reqs]
    run.completions.clear()
    together = complete_labs(run, reqs)
    assert len({str(a["build"]["pieces"]) for a in alone}) == len(reqs)  # they differ
    for body, single, batched in zip(BATCH_BODIES, alone, together):
        single, single_scores = scores_apart(single)
        batched, batched_scores = scores_apart(batched)
        assert batched == single, body
        # A build's score sums logits that XLA computes for more rows per call in a batch,
        # rounding the last bits of a float32 differently (measured: ~5e-7 relative).
        assert batched_scores == pytest.approx(single_scores, rel=1e-5, abs=1e-5)


def test_a_full_cache_keeps_what_a_batch_found_in_it(served):
    # The cache is full and the batch's cached build is its oldest entry: the batch's new
    # build must drop another one.
    _, run, _ = served
    cached, new = (lab_request(b, run) for b in BATCH_BODIES[:2])
    complete_lab(run, cached)
    key = next(reversed(run.completions))
    run.completions.move_to_end(key, last=False)
    for i in range(COMPLETION_CACHE - len(run.completions)):
        run.completions[("filler", i)] = None
    new_key = (new.weapon, new.row.tobytes(), BEAM_SIZE)
    run.completions.pop(new_key, None)
    answers = complete_labs(run, [cached, new])
    assert [a["build"]["weapon"] for a in answers] == [cached.weapon, new.weapon]
    assert key in run.completions and new_key in run.completions
    assert len(run.completions) == COMPLETION_CACHE
    for k in [k for k in run.completions if k[0] == "filler"]:
        del run.completions[k]


def test_a_bad_request_among_good_ones_gets_its_own_4xx(served):
    _, run, workdir = served
    # A window long enough that the concurrent requests share a batch.
    app = create_app(workdir, num_builds=ANALYSIS_BUILDS, batch_window_ms=300)
    bad = dict(BATCH_BODIES[3], edits=[{"feature": 5, "value": 1e9}])
    bodies = BATCH_BODIES[:2] + [bad] + BATCH_BODIES[2:]
    answers = [None] * len(bodies)
    with TestClient(app) as client:
        def post(i):
            answers[i] = client.post("/api/complete", json=bodies[i])

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        status = client.get("/api/status").json()
    assert answers[2].status_code == 400
    assert answers[2].json()["error"].startswith("edits[0].value:")
    for body, answer in zip(bodies, answers):
        if body is not bad:
            assert answer.status_code == 200, answer.text
            alone = complete_lab(run, lab_request(body, run))
            assert scores_apart(answer.json())[0] == scores_apart(alone)[0]
    # the bad one never reached the batcher; the good ones went in fewer batches than four
    batches = status["completion_batches"]
    assert batches["requests"] == 4 and batches["batches"] < 4, batches


def test_lab_offers_the_models_weapons_and_shows_the_rest_of_the_roster(served):
    from primary.weapons import WEAPONS

    client, run, _ = served
    choices = client.get("/api/lab").json()
    known = {int(g) for g in run.models()[2].game_ids}
    assert {w["id"] for w in choices["weapons"]} == known
    assert {w["id"] for w in choices["other_weapons"]} == {w.game_id for w in WEAPONS} - known
    assert len(choices["weapons"]) + len(choices["other_weapons"]) == len(WEAPONS)
    mint = next(w for w in choices["weapons"] + choices["other_weapons"] if w["id"] == 8020)
    assert mint == {"id": 8020, "name": "Mint Decavitator", "class": "splatana"}


def test_lab_takes_weapons_and_abilities_by_any_name(served):
    client, _, _ = served
    _, plain = _lab_case(client)
    body = {"weapon": "SHOOTER_NORMAL_00", "abilities": {"Swim Speed Up": 10,
                                                         "MainInk_Save": 6}}
    out = client.post("/api/complete", json=body).json()
    assert out["build"]["pieces"] == plain["build"]["pieces"]
    r = client.post("/api/complete", json={"weapon": 40, "abilities": {"Swim Sped Up": 3}})
    assert r.status_code == 400
    assert "did you mean 'Swim Speed Up'" in r.json()["error"]
    r = client.post("/api/complete", json={"weapon": "Splatershot"})
    assert r.status_code == 400 and "did you mean 'Splattershot'" in r.json()["error"]
    r = client.post("/api/complete", json={"weapon": 40, "abilities": {"Swim Speed Up": 3,
                                                                       "swim_speed_up": 6}})
    assert r.status_code == 400 and "abilities.swim_speed_up" in r.json()["error"]


BAD = [
    ("get", "/api/features?sort=bogus", None, 400, "sort"),
    ("get", "/api/features?limit=0", None, 400, "limit"),
    ("get", "/api/features?limit=abc", None, 400, "limit"),
    ("get", "/api/features?offset=-1", None, 400, "offset"),
    ("get", "/api/features?fmin=2", None, 400, "fmin"),
    ("get", "/api/features?fmin=nan", None, 400, "fmin"),
    ("get", "/api/features?fmin=0.5&fmax=0.1", None, 400, "fmin"),
    ("get", "/api/features?window=maybe", None, 400, "window"),
    ("get", "/api/features?scope=some", None, 400, "scope"),
    ("get", "/api/features?window=1&scope=all", None, 400, "window"),
    ("get", "/?scope=some", None, 400, "scope"),
    ("get", "/lab?feature=abc", None, 400, "feature"),
    ("get", "/lab?feature=100000", None, 404, "out of range"),
    ("get", "/api/features/abc", None, 400, "feature"),
    ("get", "/api/features/-1", None, 404, "out of range"),
    ("get", "/api/features/128", None, 404, "out of range"),
    ("post", "/api/features/3/label", {"name": ""}, 400, "name"),
    ("post", "/api/features/3/label", {"name": 5}, 400, "name"),
    ("post", "/api/features/3/label", {"name": "x", "category": "weird"}, 400, "category"),
    ("post", "/api/features/3/label", {"name": "x", "notes": 3}, 400, "notes"),
    ("post", "/api/features/3/label", {"name": "x", "colour": "red"}, 400, "colour"),
    ("post", "/api/features/3/label", [1, 2], 400, "body"),
    ("post", "/api/features/999/label", {"name": "x"}, 404, "out of range"),
    ("delete", "/api/features/4/label", None, 400, "no label"),
    ("post", "/api/complete", None, 400, "body"),
    ("post", "/api/complete", [], 400, "body"),
    ("post", "/api/complete", {}, 400, "weapon"),
    ("post", "/api/complete", {"weapon": "No Such Gun"}, 400, "weapon"),
    ("post", "/api/complete", {"weapon": 999999}, 400, "weapon"),
    ("post", "/api/complete", {"weapon": True}, 400, "weapon"),
    ("post", "/api/complete", {"weapon": [1]}, 400, "weapon"),
    ("post", "/api/complete", {"weapon": 40, "abilities": []}, 400, "abilities"),
    ("post", "/api/complete", {"weapon": 40, "abilities": {"flying": 3}}, 400, "abilities.flying"),
    ("post", "/api/complete", {"weapon": 40, "abilities": {"swim_speed_up": -3}}, 400,
     "abilities.swim_speed_up"),
    ("post", "/api/complete", {"weapon": 40, "abilities": {"swim_speed_up": 2.5}}, 400,
     "abilities.swim_speed_up"),
    ("post", "/api/complete", {"weapon": 40, "abilities": {"swim_speed_up": "9"}}, 400,
     "abilities.swim_speed_up"),
    ("post", "/api/complete", {"weapon": 40, "abilities": {"swim_speed_up": 99}}, 400,
     "abilities.swim_speed_up"),
    ("post", "/api/complete", {"weapon": 40, "abilities": {"swim_speed_up": 57,
                                                          "ink_saver_main": 3}}, 400, "abilities"),
    ("post", "/api/complete", {"weapon": 40, "abilities": {"comeback": 10,
                                                          "last_ditch_effort": 10}}, 400,
     "abilities"),
    ("post", "/api/complete", {"weapon": 40, "edits": {}}, 400, "edits"),
    ("post", "/api/complete", {"weapon": 40, "edits": [5]}, 400, "edits[0]"),
    ("post", "/api/complete", {"weapon": 40, "edits": [{"feature": 1}]}, 400, "edits[0]"),
    ("post", "/api/complete", {"weapon": 40, "edits": [{"feature": 128, "value": 0}]}, 400,
     "edits[0].feature"),
    ("post", "/api/complete", {"weapon": 40, "edits": [{"feature": "1", "value": 0}]}, 400,
     "edits[0].feature"),
    ("post", "/api/complete", {"weapon": 40, "edits": [{"feature": 1, "value": "big"}]}, 400,
     "edits[0].value"),
    ("post", "/api/complete", {"weapon": 40, "edits": [{"feature": 1, "value": 0},
                                                      {"feature": 1, "value": 2}]}, 400,
     "edits[1].feature"),
    ("post", "/api/complete", {"weapon": 40, "extra": 1}, 400, "extra"),
    ("get", "/api/complete", None, 405, ""),
    ("get", "/api/nothing", None, 404, ""),
    ("get", "/feature/xyz", None, 400, "feature"),
    ("get", "/feature/100000", None, 404, "out of range"),
    ("get", "/?limit=100000", None, 400, "limit"),
]


@pytest.mark.parametrize("method,url,body,status,field", BAD,
                         ids=[f"{m} {u} {json.dumps(b)[:40]}" for m, u, b, _, _ in BAD])
def test_bad_requests_get_a_4xx_naming_the_field(served, method, url, body, status, field):
    client, _, _ = served
    kwargs = {} if body is None else {"json": body}
    r = getattr(client, method)(url, **kwargs)
    assert r.status_code == status, r.text
    assert field in r.text
    if url.startswith("/api/") and status != 405 and url != "/api/nothing":
        assert field in r.json()["error"]
    assert client.get("/api/run").status_code == 200  # still serving


def test_malformed_json_and_non_finite_values(served):
    client, _, _ = served
    r = client.post("/api/complete", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and "body" in r.json()["error"]
    r = client.post("/api/complete",
                    content=b'{"weapon": 40, "edits": [{"feature": 1, "value": NaN}]}')
    assert r.status_code == 400 and "edits[0].value" in r.json()["error"]
    r = client.post("/api/complete", content=b"\xff\xfe")
    assert r.status_code == 400
    # Huge numbers get a 400 naming their field (a 5000-digit integer cannot even be printed).
    huge = b"9" * 5000
    for body, field in [(b'{"weapon": ' + huge + b'}', "weapon"),
                        (b'{"weapon": 40, "edits": [{"feature": ' + huge + b', "value": 0}]}',
                         "edits[0].feature"),
                        (b'{"weapon": 40, "edits": [{"feature": 1, "value": 1e308}]}',
                         "edits[0].value")]:
        r = client.post("/api/complete", content=body)
        assert r.status_code == 400 and r.json()["error"].startswith(field), r.text
    # Hostile bodies: deep nesting is a 400 naming the body, a huge one a 413 unread.
    r = client.post("/api/complete", content=b"[" * 60_000 + b"]" * 60_000)
    assert r.status_code == 413 and "body" in r.json()["error"]
    r = client.post("/api/complete", content=b"[" * 30_000 + b"]" * 30_000)
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
    r = client.post("/api/features/3/label", content=b"x" * 10_000_000)
    assert r.status_code == 413 and "65,536" in r.json()["error"]


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("href", "src") and v]


@pytest.mark.parametrize("url,needle", [("/", 'id="features"'), ("/feature/5", 'id="f5"'),
                                        ("/lab", 'id="abilities"'), ("/?q=zzzzzz", "no feature")])
def test_pages_render_with_local_assets_only(served, url, needle):
    client, _, _ = served
    r = client.get(url)
    assert r.status_code == 200 and needle in r.text
    links = _Links()
    links.feed(r.text)
    assert links.urls and all(u.startswith(("/", "#")) for u in links.urls), links.urls
    for u in links.urls:
        if u.startswith("/static/"):
            assert client.get(u).status_code == 200, u


def test_feature_page_shows_explanation_and_rung_curves(served):
    client, run, _ = served
    feature, text = next(iter(EXPLAINED.items()))
    page = client.get(f"/feature/{feature}").text
    assert "Fires on builds with" in page and "AP rung curves" in page and "labelform" in page
    # The frequency names its base: how many analysis builds the index counts.
    assert f"of {int(run.index()['num_builds']):,} analysis builds" in page
    other = client.get("/feature/1").text
    assert "No explanation for this feature" in other


def test_list_and_page_show_where_a_rule_is_read_and_when_it_is_broader(served):
    client, _, _ = served
    rows = {r["id"]: r for r in client.get("/api/features?scope=all&limit=500").json()[
        "features"]}
    narrow = next(f for f in EXPLAINED if f != BROADER)
    assert rows[BROADER]["distribution"] == "partial" and rows[BROADER]["broader"]
    assert (rows[BROADER]["precision"], rows[BROADER]["recall"]) == (0.3, 0.9)
    assert rows[narrow]["distribution"] == "full" and not rows[narrow]["broader"]
    unexplained = next(f for f in rows if str(f) not in map(str, EXPLAINED))
    assert rows[unexplained]["distribution"] is None and not rows[unexplained]["broader"]
    listing = client.get("/?scope=all&sort=f1&limit=500").text
    row = listing[listing.index(f'href="/feature/{BROADER}"'):]
    row = row[:row.index("</tr>")]
    assert ">partial <" in row and "(1.23%)" in row and "0.30 / 0.90" in row and "broader" in row
    assert rows[BROADER]["frequency_partial"] == 0.0123
    assert "broader" not in listing[listing.index(f'href="/feature/{narrow}"'):].split(
        "</tr>")[0]
    page = " ".join(client.get(f"/feature/{BROADER}").text.split())
    assert "read on <b>partial builds</b>" in page and "broader than the feature" in page


def test_index_is_saved_and_reused(served):
    _, run, workdir = served
    run.index()
    assert (workdir / "workbench" / "index.npz").is_file()
    again = RunData(workdir, num_builds=ANALYSIS_BUILDS)
    np.testing.assert_array_equal(again.index()["score"], run.index()["score"])
    assert again._builds is None  # read from disk: no builds, no model run


@pytest.mark.parametrize("args,message", [
    (["--workdir=/nonexistent/run"], "is not a directory"),
    (["--workdir={tmp}", "--port=0"], "--port"),
    (["--workdir={tmp}", "--batch_window_ms=-1"], "--batch_window_ms must be 0..1000, got -1"),
    (["--workdir={tmp}"], "no run.json"),
])
def test_cli_refuses_bad_flags_with_one_error_line(tmp_path, args, message):
    import subprocess
    import sys

    if "--port=0" in args or "--batch_window_ms=-1" in args:
        make_run(tmp_path / "run")
        tmp = tmp_path / "run"
    else:
        tmp = tmp_path
    cmd = [sys.executable, "-m", "apps.serve"] + [a.format(tmp=tmp) for a in args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], out.stderr


@pytest.mark.slow  # computes every rung curve of a feature through the server
def test_rung_curves_on_demand(served):
    client, run, _ = served
    feature = next(iter(EXPLAINED))
    stored = client.get(f"/api/features/{feature}/rung_curves").json()
    assert stored["curves"] == run.explanation(feature)["rung_curves"] and "<svg" in stored["svg"]
    live = int(np.argsort(-run.index()["frequency"])[5])
    out = client.get(f"/api/features/{live}/rung_curves").json()
    curves = out["curves"]
    assert "swim_speed_up" in curves and "<svg" in out["svg"]
    for ability, c in curves.items():
        assert c["ap"][0] == 0 and c["ap"] == sorted(c["ap"]), ability
        assert len(c["mean"]) == len(c["ap"]) and min(c["mean"]) >= 0
    assert "compute rung curves" in client.get(f"/feature/{live}").text
    # The rung edits are made once for all features: each feature's curves are still the
    # analysis's own (bridge.causal.rung_curves on the same seeded sample of the builds).
    from bridge.causal import rung_curves

    builds, _ = run.builds()
    sample = np.sort(np.random.default_rng(0).choice(len(builds), min(128, len(builds)),
                                                     replace=False))
    other = int(np.argsort(-run.index()["frequency"])[6])
    direct = rung_curves(*run.models(), builds.subset(sample), [live, other])
    for f in (live, other):
        got = client.get(f"/api/features/{f}/rung_curves").json()["curves"]
        assert set(got) == set(direct[f])
        for ability, c in got.items():
            assert c["ap"] == direct[f][ability]["ap"] and c["n"] == direct[f][ability]["n"]
            np.testing.assert_allclose(c["mean"], direct[f][ability]["mean"], rtol=1e-5,
                                       atol=1e-7)


def test_serves_an_imported_splatnlp_run(tmp_path):
    """A run from bridge.import_splatnlp (run.json, model/, sae/; no analysis): lists its
    features (index over the imported run's builds), completes builds with its own
    vocabularies, and says how to get the explanations."""
    from bridge.import_splatnlp import import_run
    from tests.fixture_paths import SPLATNLP_FIXTURE

    import_run(str(SPLATNLP_FIXTURE), str(tmp_path / "imported"), sae="sae.pth")
    app = create_app(tmp_path / "imported", num_builds=300)
    with TestClient(app) as client:
        info = client.get("/api/run").json()
        assert any("apps.analyze" in m for m in info["missing"])
        listed = client.get("/api/features?scope=all&limit=3").json()
        assert listed["total"] == info["num_features"] and len(listed["features"]) == 3
        assert "python -m apps.analyze" in client.get("/lab").text
        weapon = client.get("/api/lab").json()["weapons"][0]["id"]
        done = client.post("/api/complete", json={"weapon": weapon, "abilities": {}})
        assert done.status_code == 200 and sum(done.json()["build"]["ap"].values()) == 57


def test_histograms_of_an_unclipped_sae_span_its_activations():
    # The workbench's index takes its histogram range as the report does.
    from apps.analysis.pipeline import sae_activations
    from sae_jax.feature_stats import histogram_max
    from sae_jax.model import SAEConfig, create_sae
    from sae_jax.sparse_activations import collect

    def _histogram_max(sae, pooled):
        sparse = collect(sae_activations(sae, pooled), sae.hidden_dim)
        return histogram_max(sae.config.encoder.clip_max, sparse)

    pooled = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32) * 50
    topk = create_sae(SAEConfig(8, 2, architecture="topk", k=3, clip=False), seed=0)
    h = np.asarray(encode(topk.params(), jnp.asarray(pooled), topk.config.encoder)[1])
    assert h.max() > 6  # past the clip a relu_l1 SAE would have
    assert _histogram_max(topk, pooled) == pytest.approx(float(h.max()), rel=1e-6)
    relu = create_sae(SAEConfig(8, 2), seed=0)
    assert _histogram_max(relu, pooled) == 6.0


def test_feature_page_names_the_concept_pairs_it_belongs_to(served):
    """A feature in a pair that detects a concept (concepts.json) says so on its page, with
    a link to its partner; the concept's single feature is unaffected."""
    _, _, workdir = served
    row = {"concept": "anchor", "positives": 9, "feature": 5, "sae_f1": 0.6, "sae_auroc": 0.9,
           "pair_features": [3, 7], "pair_f1": 0.9, "pair_better": True}
    path = workdir / "concepts.json"
    path.write_text(json.dumps({"rows": [row], "summary": {"recovered": 0, "total": 1}}))
    try:  # a workbench of its own: the shared one may have cached these pages already
        client = TestClient(create_app(workdir, num_builds=ANALYSIS_BUILDS))
        page = client.get("/api/features/7").json()["page"]
        assert page["pairs"] == [{"concept": "anchor", "partner": 3, "f1": 0.9}]
        assert "with 3: anchor (F1 0.90)" in client.get("/feature/7").text
        assert client.get("/api/features/4").json()["page"]["pairs"] == []
    finally:
        path.unlink()


def test_feature_page_names_the_rungs_it_is_a_main_latent_of_or_absorbs(served):
    """absorption.json's roles reach any feature's page: main latent of a rung (split with
    another latent) and absorber of another rung."""
    _, _, workdir = served
    rung = {"concept": "swim_speed_up>=12", "text": "Swim Speed Up \u226512",
            "family": "swim_speed_up", "positives": 30, "status": "measured",
            "probe_f1": 0.95, "ksparse_f1": [0.7, 0.9, 0.91], "main_latents": [6, 2],
            "main_f1": 0.9, "main_cos": [0.5, 0.4], "split": True, "checked": 12,
            "mains_silent": 0.25, "absorption_fraction": 0.3, "full_absorption": 0.25,
            "absorbers": [{"feature": 4, "rows": 3, "cos": 0.3, "main_of": []}]}
    path = workdir / "absorption.json"
    path.write_text(json.dumps({"concepts": [rung], "summary": {}}))
    try:
        client = TestClient(create_app(workdir, num_builds=ANALYSIS_BUILDS))
        assert client.get("/api/features/6").json()["page"]["absorption"]["main"][0][
            "split_with"] == [2]
        text = client.get("/feature/6").text
        assert "main latent of <b>Swim Speed Up \u226512</b>" in text
        assert "split with #2" in text and "absorbed most by #4" in text
        assert "absorbs\n<b>Swim Speed Up \u226512</b> on 3 of its 12 checked builds" in \
            client.get("/feature/4").text
        assert client.get("/api/features/5").json()["page"]["absorption"] is None
    finally:
        path.unlink()


def _dense(run) -> np.ndarray:
    """The SAE's activations on the analysis builds, (n, F)."""
    _, pooled = run.builds()
    sae = run.models()[3]
    return np.asarray(encode(sae.params(), jnp.asarray(pooled), sae.config.encoder)[1])


def _busy_feature(run) -> int:
    """A live feature active on many builds (all its bands full)."""
    freq = run.index()["frequency"]
    return next(int(f) for f in np.argsort(-freq, kind="stable") if freq[f] < 0.3)


def test_feature_page_shows_examples_across_its_activations(served):
    client, run, _ = served
    feature = _busy_feature(run)
    page = client.get(f"/api/features/{feature}").json()["page"]
    h = _dense(run)[:, feature]
    active = np.sort(h[h > 0.01])[::-1]
    bands = page["bands"]
    assert len(bands) == 5 and sum(b["count"] for b in bands) == len(active)
    assert bands[0]["high"] == pytest.approx(active[0], rel=1e-5)
    assert bands[-1]["low"] == pytest.approx(active[-1], rel=1e-5)  # down to the weakest
    builds, _ = run.builds()
    for b in bands:
        assert len(b["examples"]) == 4
        for ex in b["examples"]:
            assert ex["activation"] == pytest.approx(h[ex["row"]], rel=1e-5)
            assert b["low"] - 1e-6 <= ex["activation"] <= b["high"] + 1e-6
            assert ex["weapon_id"] == int(builds.weapons[ex["row"]])
    html = client.get(f"/feature/{feature}").text
    assert 'id="bands"' in html and html.count('class="band"') == 5


def test_feature_page_lists_the_features_that_fire_together_linked(served):
    client, run, _ = served
    feature = _busy_feature(run)
    page = client.get(f"/api/features/{feature}").json()["page"]
    fired = _dense(run) > 0.01
    both = (fired[:, feature, None] & fired).sum(0)
    union = (fired[:, feature, None] | fired).sum(0)
    jaccard = both / np.maximum(union, 1)
    jaccard[feature] = 0
    expect = sorted(np.flatnonzero(jaccard > 0), key=lambda g: (-jaccard[g], g))[:8]
    together = page["fires_together"]
    assert [g["feature"] for g in together] == [int(g) for g in expect]
    for g in together:
        assert g["jaccard"] == pytest.approx(jaccard[g["feature"]])
        assert g["both"] == both[g["feature"]]
    html = client.get(f"/feature/{feature}").text
    table = html[html.index('id="togethertable"'):]
    table = table[:table.index("</table>")]
    assert [int(m) for m in re.findall(r'href="/feature/(\d+)"', table)] == \
        [g["feature"] for g in together]


def _lab_links(html: str) -> list[dict]:
    from urllib.parse import parse_qs, urlsplit

    out = []
    for href in re.findall(r'<a class="tolab" href="([^"]+)">open in the build lab</a>', html):
        query = parse_qs(urlsplit(href.replace("&amp;", "&")).query)
        pairs = (p.split(":") for p in query["abilities"][0].split(","))
        out.append({"weapon": int(query["weapon"][0]),
                    "abilities": {name: int(ap) for name, ap in pairs}})
    return out


def test_every_example_build_opens_in_the_build_lab(served):
    client, run, _ = served
    feature = _busy_feature(run)
    page = client.get(f"/api/features/{feature}").json()["page"]
    examples = page["top_examples"] + [ex for b in page["bands"] for ex in b["examples"]]
    links = _lab_links(client.get(f"/feature/{feature}").text)
    assert len(links) == len(examples) == len(page["top_examples"]) + 20
    builds, _ = run.builds()
    for ex, link in zip(examples, links):
        row = builds.ap[ex["row"]]
        assert link["weapon"] == int(builds.weapons[ex["row"]])
        assert link["abilities"] == {a: int(v) for a, v in zip(ABILITIES, row) if v > 0}
    for link in links[:2] + links[-1:]:  # what the lab asks for with them: the build itself
        out = client.post("/api/complete", json=link)
        assert out.status_code == 200, out.text
        assert out.json()["build"]["ap"] == link["abilities"]
        assert out.json()["build"]["weapon"] == link["weapon"]


def test_set_it_in_the_build_lab_starts_from_its_strongest_build(served):
    from apps.analysis.steered_views import mains_only

    client, run, _ = served
    feature = _busy_feature(run)
    idx = run.index()
    builds, _ = run.builds()
    top = int(idx["top_rows"][feature][0])
    html = client.get(f"/feature/{feature}").text
    link = re.search(r'<a id="setlab" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    query = dict(p.split("=", 1) for p in link.split("?", 1)[1].split("&"))
    assert int(query["weapon"]) == int(builds.weapons[top])
    mains = mains_only(builds.ap[top])
    assert query["abilities"] == "%2C".join(f"{a}%3A{ap}" for a, ap in mains.items())
    assert int(query["feature"]) == feature
    # Set to 0 where it fires on those mains (what it adds), else to its maximum.
    partial = client.post("/api/complete", json={"weapon": int(query["weapon"]),
                                                 "abilities": mains}).json()
    fires = feature in [f["feature"] for f in partial["active_features"]]
    assert float(query["value"]) == (0.0 if fires else pytest.approx(
        float(idx["max_act"][feature]), rel=1e-3))
    moved = client.get(f"/lab?feature={feature}", follow_redirects=False)
    assert moved.status_code == 303 and moved.headers["location"] == link
    assert 'id="abilities"' in client.get(link).text
    chosen = client.get(f"/lab?feature={feature}&value=1.25", follow_redirects=False)
    assert chosen.headers["location"].endswith(f"feature={feature}&value=1.25")
    for other in (f for f in np.argsort(-idx["frequency"]) if idx["frequency"][f] > 0):
        start = run.top_build_start(int(other))
        out = client.post("/api/complete", json={"weapon": start[0], "abilities": start[1]})
        if int(other) not in [f["feature"] for f in out.json()["active_features"]]:
            break  # a feature silent on its own strongest build's mains: set to its maximum
    else:
        pytest.fail("every live feature fires on the mains of its strongest build")
    other_link = client.get(f"/lab?feature={int(other)}", follow_redirects=False)
    assert other_link.headers["location"].endswith(
        f"feature={int(other)}&value={float(idx['max_act'][other]):.4g}")
    dead = np.flatnonzero(idx["frequency"] == 0)
    if len(dead):  # a feature that never fires has no build to start from: the plain lab
        plain = client.get(f"/lab?feature={int(dead[0])}", follow_redirects=False)
        assert plain.status_code == 200 and 'id="abilities"' in plain.text
