"""The sweep command on a tiny primary: member run dirs, frontier files, exact resume,
the sweep definition's validation."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from apps.sweep import parse_members
from apps.training.sweep_run import train_sweep
from primary.model_dir import save_primary
from runkit.errors import UserError
from runkit.run_dir import RunDir
from sae_jax.config import SAETrainConfig
from sae_jax.sae_dir import load_sae
from tests.tiny_setup import primary_for, tiny_world

# 60 builds -> 15 primary batches of 16 per epoch; SAE steps from batch 4: 24 steps.
BASE = SAETrainConfig(
    expansion_factor=2.0, lr=3e-3, l1_coeff=1e-3, l1_warmup_steps=10, usage_warmup_steps=10,
    usage_period=100, buffer_size=128, min_buffer=64, primary_batch_size=16, sae_batch_size=32,
    sae_steps_per_primary_step=2, epochs=1, data_fraction=1.0, resample_steps=(12,),
    num_builds=60, seed=0, log_every=4, checkpoint_every=8, eval_builds=20,
)
MEMBERS = json.dumps([
    {"grid": {"l1_coeff": [1e-3, 0.1]}},
    {"architecture": "topk", "resample_steps": [], "grid": {"k": [3]}},
])


def _primary_dir(root):
    _, vocab, weapon_vocab = tiny_world(BASE.num_builds, BASE.seed)
    save_primary(root / "model", primary_for(vocab, weapon_vocab), vocab, weapon_vocab)
    return root / "model"


def _params(mdir):
    return {k: np.asarray(v) for k, v in load_sae(mdir / "sae").params().items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    primary_dir = _primary_dir(root)
    members = parse_members(MEMBERS, ["0", "1"], BASE)
    result = train_sweep(BASE, members, root / "sweep", primary_dir=primary_dir, analyze=False)
    return root, primary_dir, members, result


def test_members_are_run_dirs_and_the_frontier_is_written(reference):
    root, primary_dir, members, result = reference
    assert [m.name for m in members] == [
        "relu_l1.l1_coeff-0.001.seed-0", "relu_l1.l1_coeff-0.001.seed-1",
        "relu_l1.l1_coeff-0.1.seed-0", "relu_l1.l1_coeff-0.1.seed-1",
        "topk.k-3.seed-0", "topk.k-3.seed-1"]
    sweep = root / "sweep"
    for m in members:
        mdir = sweep / "members" / m.name
        for name in ("run.json", "train_config.json", "metrics.json", "metrics.jsonl",
                     "curves.png", "sae/config.json"):
            assert (mdir / name).exists(), (m.name, name)
        assert json.loads((mdir / "train_config.json").read_text())["seed"] == m.cfg.seed
        assert RunDir(mdir).primary_dir() == primary_dir  # --primary_dir, outside the sweep
        assert result[m.name]["steps"] == 24
        # Recorded relative to the member where inside the sweep, as given where outside.
        assert result[m.name]["sweep"] == "../.."
        assert result[m.name]["primary_model_dir"] == str(primary_dir)
        assert np.isfinite(result[m.name]["fve"]) and result[m.name]["mse"] > 0
    assert load_sae(sweep / "members" / members[4].name / "sae").config.architecture == "topk"
    # Seeds give different SAEs; a stronger L1 gives a sparser one.
    a, b = (_params(sweep / "members" / members[i].name) for i in (0, 1))
    assert not np.allclose(a["W_enc"], b["W_enc"])
    l0 = {m.name: result[m.name]["l0"] for m in members}
    for seed in (0, 1):
        strong, weak = (l0[f"relu_l1.l1_coeff-{c}.seed-{seed}"] for c in ("0.1", "0.001"))
        assert strong < weak, (strong, weak)
    doc = json.loads((sweep / "sweep.json").read_text())
    assert len(doc["members"]) == 6 and len(doc["settings"]) == 3
    setting = next(s for s in doc["settings"] if s["setting"] == "relu_l1.l1_coeff-0.001")
    fves = [result[n]["fve"] for n in setting["members"]]
    assert setting["fve"]["mean"] == pytest.approx(np.mean(fves))
    assert setting["fve"]["std"] == pytest.approx(np.std(fves))
    assert (sweep / "frontier.png").stat().st_size > 1000
    html = (sweep / "sweep.html").read_text()
    assert 'href="members/topk.k-3.seed-1/report/index.html"' in html


def test_rerunning_a_finished_sweep_keeps_its_timing(reference):
    root, primary_dir, members, result = reference
    report = root / "sweep" / "sweep.json"
    before = json.loads(report.read_text())["timing"]
    again = train_sweep(BASE, members, root / "sweep", primary_dir=primary_dir, analyze=False)
    assert again == result  # nothing retrained: the members' finished metrics
    after = json.loads(report.read_text())["timing"]
    assert after["members_seconds"] == before["members_seconds"]
    assert after["train_seconds"] == before["train_seconds"]


@pytest.mark.slow  # kills and resumes a whole sweep
def test_killed_sweep_resumes_bit_identically(reference, tmp_path):
    root, primary_dir, members, _ = reference
    out = train_sweep(BASE, members, tmp_path, primary_dir=primary_dir, stop_after_steps=10,
                      analyze=False)
    assert out["stopped"] and out["steps"] == 10
    train_sweep(BASE, members, tmp_path, primary_dir=primary_dir, analyze=False)
    for m in members:
        want = _params(root / "sweep" / "members" / m.name)
        got = _params(tmp_path / "members" / m.name)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{m.name} {k}")


def test_a_member_trains_as_a_single_run_of_its_settings(reference, tmp_path):
    # The sweep harvests and buffers as a single run does (blocks of length groups, the
    # same data order and batch draws): a member ends where sae_jax.train ends.
    from apps.training.single_run import train_sae

    root, primary_dir, members, result = reference
    member = members[0]
    single = train_sae(member.cfg, tmp_path, primary_dir=primary_dir, analyze=False)
    assert single["steps"] == result[member.name]["steps"]
    want = _params(root / "sweep" / "members" / member.name)
    got = _params(tmp_path)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6,
                                   err_msg=f"{member.name} {k}")


def _json_without_seconds(path):
    doc = json.loads(path.read_text())
    doc.get("summary", {}).pop("seconds", None)
    return doc


@pytest.mark.slow  # analyzes every member twice
def test_members_analyzed_on_shared_inputs_equal_their_own_analysis(reference, tmp_path):
    """The sweep analyzes its members on inputs made once (pooled builds, fresh builds, rung
    edits); each member's files equal those of analyzing its directory alone."""
    from apps.analysis.pipeline import analyze

    root, primary_dir, members, _ = reference
    sweep = tmp_path / "sweep"
    shutil.copytree(root / "sweep", sweep)
    checked = (members[0], members[4])  # a relu_l1 and a topk member
    for m in members:  # as if a resumed sweep had finished the others already
        if m not in checked:
            (sweep / "members" / m.name / "report").mkdir()
    train_sweep(BASE, members, sweep, primary_dir=primary_dir, analyze=True)
    for m in checked:
        mdir = sweep / "members" / m.name
        alone = tmp_path / f"alone-{m.name}"
        shutil.copytree(mdir, alone, ignore=shutil.ignore_patterns(
            "report", "explanations.json", "concepts.json"))
        analyze(alone)
        for name in ("explanations.json", "concepts.json"):
            assert _json_without_seconds(alone / name) == _json_without_seconds(mdir / name), (
                m.name, name)
        assert (mdir / "report" / "index.html").exists()


def test_a_changed_sweep_is_refused(reference):
    root, primary_dir, members, _ = reference
    fewer = members[:2]
    with pytest.raises(ValueError, match="other members"):
        train_sweep(BASE, fewer, root / "sweep", primary_dir=primary_dir, analyze=False)


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ('{"k": 3}', "non-empty JSON list"),
    ('[{}, {"grid": {"l1_coef": [1]}}]', "entry 1: unknown setting 'l1_coef'"),
    ('[{"k": "eight"}]', "entry 0: k must be of type int"),
    ('[{"buffer_size": 64}]', "entry 0: buffer_size is sweep-wide"),
    ('[{"seed": 3}]', "entry 0: set seeds with --seeds"),
    ('[{"grid": {"lr": []}}]', "entry 0: grid must map"),
    ('[{}, {}]', "same name"),
])
def test_bad_member_definitions_name_the_entry(text, message):
    with pytest.raises(UserError, match=message):
        parse_members(text, ["0"], BASE)


def test_a_bad_member_setting_names_the_member(tmp_path):
    members = parse_members('[{"architecture": "topk", "k": 3}]', ["0"], BASE)
    with pytest.raises(ValueError, match="member topk.seed-0: .*resample_steps"):
        train_sweep(BASE, members, tmp_path / "w", primary_dir=_primary_dir(tmp_path),
                    analyze=False)
    assert dataclasses.replace(BASE).seed == 0
