"""SAE runs on activations a user brings (--activations): a .npy file and a folder of
safetensors shards train the same SAE, the evaluation reads the held-out rows only, a run
resumes exactly, and bad or changed files are refused before anything is written."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from apps.training.single_run import train_sae
from runkit.resume import SettingsChanged
from sae_jax.activation_files import ActivationFileError
from sae_jax.config import SAETrainConfig
from sae_jax.row_split import evaluation_split
from sae_jax.sae_dir import load_sae

ROWS, D = 2000, 8
# 2000 rows: 200 held out, 1800 trained on: 28 batches of 64 per epoch, 56 over 2 epochs;
# training from batch 4 (min_buffer 256): 53 SAE steps.
CFG = SAETrainConfig(
    architecture="topk", k=4, resample_steps=(), expansion_factor=3.0, lr=3e-3,
    buffer_size=512, min_buffer=256, primary_batch_size=64, sae_batch_size=64,
    sae_steps_per_primary_step=1, epochs=2, data_fraction=1.0, seed=3, log_every=10,
    checkpoint_every=20, eval_rows=500,
)
TOTAL_STEPS = 53


def activations(seed=0):
    """Rows made of two of 24 directions each, scaled, plus noise: what an SAE can learn."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(24, D))
    picks = rng.integers(0, 24, size=(ROWS, 2))
    scale = rng.uniform(0.5, 2.0, size=(ROWS, 2, 1))
    x = (atoms[picks] * scale).sum(1) + 0.05 * rng.normal(size=(ROWS, D))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    x = activations()
    np.save(root / "acts.npy", x)
    shards = root / "shards"
    shards.mkdir()
    for i, (a, b) in enumerate([(0, 700), (700, 1500), (1500, ROWS)]):
        save_file({"activations": x[a:b]}, str(shards / f"part-{i}.safetensors"))
    return root, x


@pytest.fixture(scope="module")
def reference(data):
    root, _ = data
    cfg = CFG.__class__(**{**CFG.__dict__, "activations": str(root / "acts.npy")})
    result = train_sae(cfg, root / "run", analyze=False)
    return root / "run", cfg, result


def params(workdir):
    return {k: np.asarray(v) for k, v in load_sae(workdir / "sae").params().items()}


def test_a_npy_run_records_its_file_and_evaluates_on_the_held_out_rows(data, reference):
    _, x = data
    workdir, cfg, result = reference
    run = json.loads((workdir / "run.json").read_text())
    assert run["data_source"] == "activations" and run["primary_model_dir"] == ""
    assert run["data_path"] == cfg.activations and run["num_rows"] == ROWS
    assert run["eval_rows"] == 200 and len(run["activations_sha256"]) == 64
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["steps"] == result["steps"] == TOTAL_STEPS
    assert metrics["activations"] == cfg.activations and metrics["d_in"] == D
    assert "loss_recovered" not in metrics and "primary_model_dir" not in metrics
    # The evaluation, recomputed with numpy on the held-out rows from the saved SAE.
    held = x[evaluation_split(ROWS, cfg.eval_rows, cfg.seed).held_out].astype(np.float64)
    p = {k: v.astype(np.float64) for k, v in params(workdir).items()}
    pre = (held - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    kth = -np.sort(-pre, axis=1)[:, CFG.k - 1:CFG.k]
    h = np.where(pre >= kth, np.maximum(pre, 0), 0)
    recon = h @ (p["W_dec"] / np.linalg.norm(p["W_dec"], axis=1, keepdims=True)) + p["b_dec"]
    assert metrics["num_inputs"] == 200
    assert metrics["mse"] == pytest.approx(((held - recon) ** 2).mean(), rel=1e-4)
    fve = 1 - ((held - recon) ** 2).sum() / ((held - held.mean(0)) ** 2).sum()
    assert metrics["fve"] == pytest.approx(fve, rel=1e-4)
    assert metrics["fve"] > 0.5  # it learned the directions
    cosine = ((held * recon).sum(1) / np.linalg.norm(held, axis=1)
              / np.linalg.norm(recon, axis=1)).mean()
    assert metrics["recon_cosine"] == pytest.approx(cosine, rel=1e-4)
    assert metrics["l0"] == pytest.approx((h > 0.01).sum(1).mean(), rel=1e-6)


def test_a_folder_of_safetensors_shards_trains_the_same_sae(data, reference, tmp_path):
    root, _ = data
    ref_dir, cfg, ref = reference
    sharded = cfg.__class__(**{**cfg.__dict__, "activations": str(root / "shards")})
    result = train_sae(sharded, tmp_path, analyze=False)
    want, got = params(ref_dir), params(tmp_path)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert result["fve"] == ref["fve"]


@pytest.mark.slow  # a second whole run, stopped and resumed
def test_a_stopped_run_resumes_to_the_same_parameters(reference, tmp_path):
    ref_dir, cfg, _ = reference
    assert train_sae(cfg, tmp_path, stop_after_steps=25, analyze=False)["stopped"]
    resumed = train_sae(cfg, tmp_path, analyze=False)
    assert resumed["steps"] == TOTAL_STEPS
    want, got = params(ref_dir), params(tmp_path)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_non_finite_rows_are_refused_before_anything_is_written(data, tmp_path):
    _, x = data
    bad = x.copy()
    bad[1234, 5] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    cfg = CFG.__class__(**{**CFG.__dict__, "activations": str(tmp_path / "bad.npy")})
    with pytest.raises(ActivationFileError, match=r"bad\.npy: row 1234 holds a non-finite"):
        train_sae(cfg, tmp_path / "run", analyze=False)
    assert not (tmp_path / "run" / "train_config.json").exists()


@pytest.mark.parametrize("change, message", [
    (dict(data_source="statink", data_path="x.csv"), "--activations replaces the builds"),
    (dict(concepts_file="c.json"), "--activations has none"),
    (dict(eval_rows=0), "--eval_rows must be positive"),
    (dict(primary_batch_size=4096), "give no full batch of --primary_batch_size 4096"),
])
def test_settings_that_do_not_fit_the_files_are_refused(data, tmp_path, change, message):
    root, _ = data
    cfg = CFG.__class__(**{**CFG.__dict__, "activations": str(root / "acts.npy"), **change})
    with pytest.raises(ValueError, match=message):
        train_sae(cfg, tmp_path, analyze=False)
    assert not (tmp_path / "train_config.json").exists()


def test_a_primary_dir_beside_activations_is_refused(data, tmp_path):
    root, _ = data
    cfg = CFG.__class__(**{**CFG.__dict__, "activations": str(root / "acts.npy")})
    with pytest.raises(ValueError, match="leave out --primary_dir"):
        train_sae(cfg, tmp_path, primary_dir=root, analyze=False)


def test_other_data_under_the_same_path_is_a_changed_setting(data, tmp_path):
    _, x = data
    np.save(tmp_path / "acts.npy", x)
    cfg = CFG.__class__(**{**CFG.__dict__, "activations": str(tmp_path / "acts.npy")})
    train_sae(cfg, tmp_path / "run", stop_after_steps=5, analyze=False)
    np.save(tmp_path / "acts.npy", x[::-1].copy())
    with pytest.raises(SettingsChanged, match=r"started on other activations .* --override"):
        train_sae(cfg, tmp_path / "run", analyze=False)


def test_the_analysis_ranks_features_over_the_held_out_rows(data, reference, capsys):
    from apps.analysis.pipeline import analyze

    _, x = data
    workdir, cfg, _ = reference
    analyze(workdir, top_features=5)
    # No AP rungs in activation files: absorption is skipped, and the run says so.
    assert "absorption: not measured" in capsys.readouterr().out
    assert not (workdir / "absorption.json").exists()
    doc = json.loads((workdir / "report" / "features.json").read_text())
    assert doc["on_activations"] and doc["num_builds"] == 200 and len(doc["pages"]) == 5
    held_out = evaluation_split(ROWS, cfg.eval_rows, cfg.seed).held_out
    sae = load_sae(workdir / "sae")
    page = doc["pages"][0]
    rows = [ex["table_row"] for ex in page["top_examples"]]
    assert set(rows) <= set(held_out.tolist())  # never a row it trained on
    # Its strongest rows, by the SAE's own activations on every held-out row.
    h = np.asarray(sae.encode(x[held_out])[1])[:, page["id"]]
    assert rows[0] == held_out[np.argmax(h)]
    assert page["top_examples"][0]["activation"] == pytest.approx(h.max(), rel=1e-5)
    assert page["top_examples"][0]["where"] == f"row {rows[0]}"
    assert page["frequency"] == pytest.approx((h > 0.01).mean())
    html = (workdir / "report" / "index.html").read_text()
    assert "200 held-out rows" in html and "pooled vectors" not in html
    assert "Absorption is not measured" in html and 'id="absorption"' not in html
    card = (workdir / "report" / "cards" / f"f{page['id']}.js").read_text()
    assert "Top activating rows" in card and "Promotes" not in card


def test_the_saelens_export_takes_the_users_hook_name(reference, tmp_path):
    from bridge.export_saelens import export_workdir, load_saelens_export
    from runkit.errors import UserError

    workdir, cfg, _ = reference
    with pytest.raises(UserError, match=r"trained on the activations in .*acts\.npy.* give "
                                        r"--hook_name"):
        export_workdir(workdir, tmp_path / "none")
    assert not (tmp_path / "none").exists()
    out = export_workdir(workdir, tmp_path / "out", hook_name="blocks.6.hook_resid_post")
    saved = json.loads((out / "cfg.json").read_text())
    assert saved["hook_name"] == "blocks.6.hook_resid_post" and saved["d_in"] == D
    assert saved["model_name"] is None and saved["metadata"]["model_class_name"] is None
    assert saved["metadata"]["activations"] == cfg.activations
    assert "primary_model_dir" not in saved["metadata"]
    back = load_saelens_export(out).params()
    for k, v in params(workdir).items():
        if k != "W_dec":  # exported with unit rows, as the forward pass uses them
            np.testing.assert_array_equal(np.asarray(back[k]), v, err_msg=k)


@pytest.mark.slow  # a sweep of five members, each analyzed
def test_a_sweep_trains_every_architecture_on_the_files(data, reference, tmp_path):
    from apps.training.sweep_run import SweepMember, train_sweep

    _, cfg, _ = reference
    members = [SweepMember(name, cfg.__class__(**{**cfg.__dict__, **settings}))
               for name, settings in [
                   ("topk", {}),
                   ("batchtopk", dict(architecture="batchtopk")),
                   ("matryoshka", dict(architecture="matryoshka", matryoshka_groups=(8, 16))),
                   ("relu_l1", dict(architecture="relu_l1", l1_coeff=1e-3, resample_steps=(30,),
                                    l1_warmup_steps=10, usage_warmup_steps=10)),
                   ("jumprelu", dict(architecture="jumprelu", l0_coeff=3e-3,
                                     jumprelu_bandwidth=0.05, jumprelu_init_threshold=0.05,
                                     l1_warmup_steps=10))]]
    results = train_sweep(cfg, members, tmp_path, analyze=True)
    for name, result in results.items():
        assert result["steps"] == TOTAL_STEPS and result["activations"] == cfg.activations
        assert result["num_inputs"] == 200 and np.isfinite(result["fve"])
        assert (tmp_path / "members" / name / "report" / "index.html").exists()
        assert not (tmp_path / "members" / name / "absorption.json").exists()
    assert "Absorption (absorption_fraction, full_absorption, rungs_split) is not measured" \
        in (tmp_path / "sweep.html").read_text()
    single = json.loads((reference[0] / "metrics.json").read_text())
    # The topk member trained the reference's settings on the same rows and batches.
    assert results["topk"]["fve"] == pytest.approx(single["fve"], rel=1e-4)


@pytest.mark.slow  # starts the commands in their own processes
def test_the_commands_train_on_files_and_refuse_bad_ones_in_one_line(data, reference, tmp_path):
    import os
    import subprocess
    import sys

    root, x = data
    np.save(tmp_path / "ints.npy", np.zeros((100, 4), np.int32))
    bad = x.copy()
    bad[77] = np.inf
    np.save(tmp_path / "inf.npy", bad)

    def run(*argv):
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        return subprocess.run([sys.executable, "-m", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    small = ["--architecture=topk", "--k=4", "--resample_steps=", "--buffer_size=512",
             "--min_buffer=256", "--primary_batch_size=64", "--sae_batch_size=64",
             "--epochs=1", "--data_fraction=1", "--eval_rows=200"]
    for name, expected in (("ints.npy", "ints.npy: the array has dtype int32"),
                           ("inf.npy", "inf.npy: row 77 holds a non-finite value")):
        done = run("sae_jax.train", f"--activations={tmp_path / name}", "--workdir=w", *small)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr
        assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert not (tmp_path / "w").exists()
    done = run("sae_jax.train", f"--activations={root / 'shards'}", "--workdir=run", *small)
    assert done.returncode == 0, done.stderr
    assert "done: run" in done.stdout and "fve" in done.stdout
    assert (tmp_path / "run" / "report" / "index.html").exists()
    done = run("bridge.export_saelens", "--workdir=run", "--out=out")
    assert done.returncode == 1 and "give --hook_name" in done.stderr
    done = run("bridge.export_saelens", "--workdir=run", "--out=out", "--hook_name=resid.6")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "cfg.json").read_text())["hook_name"] == "resid.6"


def test_settings_left_unset_are_chosen_to_fit_the_files(data):
    """The original's defaults (0.5% of the data per epoch, an 819,200-row buffer, resampling)
    do not fit a file run: those the user did not give are chosen from the file."""
    import dataclasses

    from apps.training.activation_sources import implied_settings

    root, x = data
    cfg = SAETrainConfig(architecture="matryoshka", k=4, activations=str(root / "acts.npy"))
    unset = frozenset(f.name for f in dataclasses.fields(SAETrainConfig)) - {
        "architecture", "k", "activations"}
    fitted = implied_settings(cfg, unset)
    assert fitted.data_fraction == 1.0 and fitted.resample_steps == ()
    train_rows = ROWS - min(cfg.eval_rows, ROWS // 10)
    assert fitted.buffer_size == max(train_rows, cfg.sae_batch_size)
    assert fitted.min_buffer == fitted.buffer_size // 2
    assert sum(fitted.matryoshka_groups) == D * cfg.expansion_factor
    fitted.validate(d_sae=int(D * cfg.expansion_factor))
    # What the user gave stays, even where it cannot work (validation then says so).
    given = implied_settings(cfg, unset - {"resample_steps", "data_fraction"})
    assert given.resample_steps == cfg.resample_steps and given.data_fraction == 0.005
