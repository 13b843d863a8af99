"""End-to-end SAE runs on a tiny primary: files, exact resume, faults, bad settings, sharding."""

import dataclasses
import json
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout

import jax
import numpy as np
import pytest

from apps.runs.setup import demo_primary_config
from apps.training.single_run import TrainingFault, train_sae
from primary.model_dir import load_primary, save_primary
from primary.training import PrimaryTrainConfig
from runkit.checkpoints import MANIFEST, CheckpointMismatch, Checkpoints
from runkit.resume import SettingsChanged
from sae_jax.config import SAETrainConfig
from sae_jax.sae_dir import load_sae
from tests.tiny_setup import primary_for, tiny_world

# 60 builds -> 42 train builds x 6 examples = 252 -> 15 batches of 16 per epoch; SAE training
# starts at batch 4 (min_buffer 64): 27 SAE steps over 2 epochs, resampling at step 15.
CFG = SAETrainConfig(
    expansion_factor=2.0, lr=3e-3, l1_coeff=1e-3, l1_warmup_steps=10, usage_warmup_steps=10,
    usage_period=100, buffer_size=128, min_buffer=64, primary_batch_size=16, sae_batch_size=32,
    sae_steps_per_primary_step=1, epochs=2, data_fraction=1.0, resample_steps=(15,),
    num_builds=60, seed=0, log_every=5, checkpoint_every=10, eval_builds=20,
)
TOTAL_STEPS = 27
PRIMARY = PrimaryTrainConfig(embedding_dim=8, hidden_dim=16, num_layers=1, num_heads=2,
                             num_inducing_points=4, batch_size=16, epochs=1, lr=1e-3,
                             log_every=5, checkpoint_every=100)


def finished_demo_primary(workdir):
    """Lay out ``workdir/primary_run`` as a finished demo primary run (an untrained tiny model:
    training it is primary.training's business), which train_sae must find and reuse."""
    run = workdir / "primary_run"
    run.mkdir(parents=True)
    pcfg = demo_primary_config(CFG, PRIMARY)
    assert (pcfg.num_builds, pcfg.seed) == (CFG.num_builds, CFG.seed)  # data settings aligned
    (run / "train_config.json").write_text(json.dumps(pcfg.to_dict()))
    (run / "metrics.json").write_text("{}")
    _, vocab, weapon_vocab = tiny_world(CFG.num_builds, CFG.seed)
    save_primary(run / "model", primary_for(vocab, weapon_vocab), vocab, weapon_vocab)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run on all 4 devices, in the layout of a run with its own demo primary."""
    workdir = tmp_path_factory.mktemp("reference")
    finished_demo_primary(workdir)
    # What the run prints goes to a file, as in `python -m sae_jax.train ... > log 2>&1`.
    with (open(output_of(workdir), "w") as out, redirect_stdout(out), redirect_stderr(out)):
        result = train_sae(CFG, workdir, primary_flagfile_cfg=PRIMARY, analyze=False)
    return workdir, result


def output_of(workdir):
    return workdir.parent / f"{workdir.name}.out"


def test_output_to_a_file_has_progress_lines_and_no_redraws(reference):
    workdir, _ = reference
    raw = output_of(workdir).read_bytes()  # as written: read_text() would turn \r into \n
    assert b"\r" not in raw  # a progress bar redraws with carriage returns
    text = raw.decode()
    assert "SAE run: done, 30/30 batch (100%) in " in text.splitlines()[-2]


def final_params(workdir):
    return {k: np.asarray(v) for k, v in load_sae(workdir / "sae").params().items()}


def copy_primary(reference_dir, tmp_path):
    """A private copy of the reference's primary run (model dir + its train_config.json)."""
    dst = tmp_path / "primary_run"
    shutil.copytree(reference_dir / "primary_run", dst)
    return dst / "model"


def test_run_writes_every_file_and_sane_metrics(reference):
    workdir, result = reference
    for name in ("metrics.json", "metrics.jsonl", "train_config.json", "run.json", "curves.png",
                 "sae/config.json", "primary_run/model/config.json"):
        assert (workdir / name).exists(), name
    metrics = json.loads((workdir / "metrics.json").read_text())
    for key in ("fve", "mse", "l0", "dead_fraction", "dense_fraction", "loss_recovered",
                "l_true", "l_spliced", "l_ablated", "steps", "seconds", "original_behaviour"):
        assert key in metrics, key
    assert metrics["steps"] == result["steps"] == TOTAL_STEPS
    assert metrics["original_behaviour"] is False
    assert 0 <= metrics["dead_fraction"] <= 1 and metrics["l0"] > 0 and metrics["mse"] > 0
    run = json.loads((workdir / "run.json").read_text())
    assert run["primary_model_dir"] == "primary_run/model"  # relative: the run can move
    assert metrics["primary_model_dir"] == "primary_run/model"
    assert run["num_builds"] == 60 and run["data_source"] == "synthetic"
    assert SAETrainConfig.from_json(workdir / "train_config.json") == CFG
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [5, 10, 15, 20, 25, 27]
    assert sum(r["n_resampled"] for r in lines) == sum(
        r["n_resampled"] for r in lines if r["step"] == 15)  # resampling only at step 15
    sae = load_sae(workdir / "sae")
    assert sae.config.input_dim == 16 and sae.config.hidden_dim == 32
    with Checkpoints(workdir / "checkpoints") as ckpt:
        assert ckpt.steps()[-1] == TOTAL_STEPS


def flip_a_byte_of_the_largest_file(step_dir):
    victim = max((p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST),
                 key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [None, "delete", "flip"],
                         ids=["at-stop", "killed-after-stop", "newest-damaged"])
def test_killed_and_resumed_run_ends_with_same_params(reference, tmp_path, damage):
    ref_dir, ref_result = reference
    primary_dir = ref_dir / "primary_run" / "model"
    out = train_sae(CFG, tmp_path, primary_dir=primary_dir, stop_after_steps=12, analyze=False)
    assert out["stopped"] and out["steps"] == 12
    assert not (tmp_path / "sae").exists()
    if damage == "delete":  # as if killed after step 12 before its checkpoint landed
        shutil.rmtree(tmp_path / "checkpoints" / "12")
    elif damage == "flip":  # the disk changed a byte of the newest checkpoint: found, skipped
        flip_a_byte_of_the_largest_file(tmp_path / "checkpoints" / "12")
    resumed = train_sae(CFG, tmp_path, primary_dir=primary_dir, analyze=False)
    assert resumed["steps"] == TOTAL_STEPS
    want, got = final_params(ref_dir), final_params(tmp_path)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert resumed["fve"] == ref_result["fve"]
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # The stop logs step 12; a resume from step 10 drops the lines written after it.
    assert steps == ([5, 10, 12, 15, 20, 25, 27] if damage is None else [5, 10, 15, 20, 25, 27])


def test_nan_activations_stop_run_and_keep_last_good_checkpoint(reference, tmp_path):
    ref_dir, _ = reference
    primary_dir = copy_primary(ref_dir, tmp_path)
    workdir = tmp_path / "run"
    train_sae(CFG, workdir, primary_dir=primary_dir, stop_after_steps=6, analyze=False)
    good = load_primary(primary_dir)
    model, vocab, weapon_vocab = load_primary(primary_dir)
    table = model.weapon_embedding.embedding
    table[...] = table[...] * np.nan
    save_primary(primary_dir, model, vocab, weapon_vocab)
    # Other weights make another primary: going on with them takes --override.
    with pytest.raises(TrainingFault, match=r"non-finite activations .* at SAE step 6\b.*"
                                            r"last good checkpoint \(SAE step 6\)"):
        train_sae(CFG, workdir, primary_dir=primary_dir, analyze=False, override=True)
    with Checkpoints(workdir / "checkpoints") as ckpt:
        assert ckpt.steps()[-1] == 6
    # The kept checkpoint is good: with the primary repaired, the run finishes exactly as
    # the uninterrupted reference did.
    save_primary(primary_dir, *good)
    train_sae(CFG, workdir, primary_dir=primary_dir, analyze=False, override=True)
    want, got = final_params(ref_dir), final_params(workdir)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.parametrize("change, message", [
    (dict(buffer_size=16), "smaller than one SAE batch"),
    (dict(expansion_factor=0.0), "expansion_factor must be > 0"),
    (dict(resample_steps=(15, 500)), r"resample step\(s\) \[500\] lie beyond the run's 27"),
    (dict(data_source="nowhere"), "unknown data source 'nowhere'"),
    (dict(min_buffer=10_000, buffer_size=10_000), "never fill min_buffer"),
    (dict(primary_batch_size=18), "not divisible by the 4 devices"),
])
def test_bad_settings_refused_before_any_work(tmp_path, change, message):
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        train_sae(dataclasses.replace(CFG, **change), workdir, primary_flagfile_cfg=PRIMARY,
                  analyze=False)
    assert not workdir.exists()


def test_checkpoint_of_other_shape_is_a_clear_error(reference, tmp_path):
    primary_dir = reference[0] / "primary_run" / "model"
    train_sae(CFG, tmp_path, primary_dir=primary_dir, stop_after_steps=1, analyze=False)
    wider = dataclasses.replace(CFG, expansion_factor=4.0)
    with pytest.raises(SettingsChanged, match=r"expansion_factor: 2.0 -> 4.0.*--override"):
        train_sae(wider, tmp_path, primary_dir=primary_dir, analyze=False)
    message = r"W_dec with shape \(32, 16\), but this run .* needs \(64, 16\)"
    with pytest.raises(CheckpointMismatch, match=message):
        train_sae(wider, tmp_path, primary_dir=primary_dir, analyze=False, override=True)


def test_sharded_run_equals_single_device(reference, tmp_path):
    ref_dir, ref_result = reference
    assert ref_result["num_devices"] == 4
    one = train_sae(CFG, tmp_path, primary_dir=ref_dir / "primary_run" / "model",
                    devices=jax.devices()[:1], analyze=False)
    assert one["num_devices"] == 1
    want, got = final_params(ref_dir), final_params(tmp_path)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert one["fve"] == pytest.approx(ref_result["fve"], rel=1e-4, abs=1e-5)


def test_cli_reads_flagfile_and_command_line_overrides():
    from pathlib import Path

    from absl import flags

    from apps import train as cli
    from runkit.flags import config_from_flagfile

    demo = Path(__file__).resolve().parents[3] / "configs" / "demo_relu_l1.flags"
    values = flags.FLAGS
    try:
        values(["train", f"--flagfile={demo}", "--workdir=/tmp/x"])
        from_file = cli.config_from_flags(values)
        values.unparse_flags()
        values(["train", f"--flagfile={demo}", "--lr=0.5", "--resample_steps=7,9",
                "--original_behaviour", "--workdir=/tmp/x"])
        overridden = cli.config_from_flags(values)
    finally:
        values.unparse_flags()
    assert from_file == config_from_flagfile(SAETrainConfig, demo)  # both readers agree
    assert from_file.resample_steps == (1000, 2000) and from_file.lr == 1e-3
    assert overridden == dataclasses.replace(from_file, lr=0.5, resample_steps=(7, 9),
                                             original_behaviour=True)
    from_file.validate()


def test_resuming_a_run_killed_during_evaluation_keeps_its_record(reference, tmp_path):
    ref_dir, ref_result = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    (workdir / "metrics.json").unlink()  # killed after the final checkpoint, before the end
    again = train_sae(CFG, workdir, primary_flagfile_cfg=PRIMARY, analyze=False)
    assert again["final_train"] == ref_result["final_train"] and again["final_train"]
    assert again["seconds"] >= ref_result["seconds"] * 0.5  # the first session's time counts
    assert again["fve"] == ref_result["fve"]
    # A finished run is reported, not redone.
    assert train_sae(CFG, workdir, primary_flagfile_cfg=PRIMARY, analyze=False) == again


def test_a_busy_workdir_is_refused_at_once(reference, tmp_path):
    from runkit.lock import WorkdirBusy, WorkdirLock

    primary_dir = reference[0] / "primary_run" / "model"
    with WorkdirLock(tmp_path):  # another run holds it
        with pytest.raises(WorkdirBusy, match=rf"process {os.getpid()}"):
            train_sae(CFG, tmp_path, primary_dir=primary_dir, analyze=False)
    assert not (tmp_path / "train_config.json").exists()


def test_non_finite_evaluation_is_refused_not_written(reference, tmp_path, monkeypatch):
    from apps.runs import evaluation
    def nan_recovered(*args, **kwargs):
        return {"fve": 0.9, "l_true": 0.1, "l_spliced": 0.2, "l_ablated": 0.3,
                "loss_recovered": float("nan")}

    monkeypatch.setattr(evaluation, "evaluate_sae", nan_recovered)
    with pytest.raises(TrainingFault, match=r"non-finite \['loss_recovered'\]"):
        train_sae(CFG, tmp_path, primary_dir=reference[0] / "primary_run" / "model",
                  analyze=False)
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow  # runs a whole analysis
def test_a_finished_run_whose_analysis_was_cut_short_is_analyzed_on_the_rerun(reference,
                                                                               tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference[0], workdir)  # finished, with no analysis (as if killed in it)
    assert not (workdir / "report" / "features.json").exists()
    out = tmp_path / "out.txt"
    with open(out, "w") as f, redirect_stdout(f), redirect_stderr(f):
        again = train_sae(CFG, workdir, primary_flagfile_cfg=PRIMARY)
    assert ("whose analysis is missing, cut short or damaged (analysis_files.json (the step "
            "never finished)); analyzing it again") in out.read_text()
    assert again == reference[1]
    for name in ("explanations.json", "report/index.html", "report/features.json"):
        assert (workdir / name).is_file(), name
    # Analyzed now: a further rerun only reports.
    stamp = (workdir / "report" / "features.json").stat().st_mtime_ns
    with open(out, "w") as f, redirect_stdout(f), redirect_stderr(f):
        train_sae(CFG, workdir, primary_flagfile_cfg=PRIMARY)
    assert "reporting its metrics" in out.read_text()
    assert (workdir / "report" / "features.json").stat().st_mtime_ns == stamp
    # A file of the analysis damaged since: analyzed again, the file named.
    (workdir / "explanations.json").write_text("{}")
    with open(out, "w") as f, redirect_stdout(f), redirect_stderr(f):
        train_sae(CFG, workdir, primary_flagfile_cfg=PRIMARY)
    assert "(explanations.json (changed or damaged since it was written))" in out.read_text()
    assert json.loads((workdir / "explanations.json").read_text()) != {}


def test_a_start_that_fails_on_its_inputs_leaves_no_trace(reference, tmp_path):
    """A primary whose parameter files are damaged fails as its model loads: neither the
    new workdir nor the failed start's settings stay behind to block the corrected rerun."""
    primary = tmp_path / "primary"
    shutil.copytree(reference[0] / "primary_run" / "model", primary)
    biggest = max((p for p in (primary / "params").rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    workdir = tmp_path / "new"
    with pytest.raises(ValueError, match="damaged or truncated"):
        train_sae(CFG, workdir, primary_dir=str(primary), analyze=False)
    assert not workdir.exists()
    # In a workdir that already existed, the failed start records no settings.
    workdir.mkdir()
    with pytest.raises(ValueError, match="damaged or truncated"):
        train_sae(CFG, workdir, primary_dir=str(primary), analyze=False)
    assert not (workdir / "train_config.json").exists()


@pytest.mark.slow  # three runs on two primaries
def test_the_primary_is_a_checked_setting(reference, tmp_path):
    """A half-trained run resumed on another primary (other weights) is refused with the
    difference named; the same primary copied elsewhere resumes."""
    first = copy_primary(reference[0], tmp_path / "a")
    workdir = tmp_path / "run"
    train_sae(CFG, workdir, primary_dir=str(first), stop_after_steps=5, analyze=False)
    _, vocab, weapon_vocab = tiny_world(CFG.num_builds, CFG.seed)
    other = tmp_path / "other"
    save_primary(other, primary_for(vocab, weapon_vocab, seed=7), vocab, weapon_vocab)
    with pytest.raises(SettingsChanged, match="started on another primary model .* "
                                              "--primary_dir .*other differs"):
        train_sae(CFG, workdir, primary_dir=str(other), stop_after_steps=10, analyze=False)
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    done = train_sae(CFG, workdir, primary_dir=str(moved), stop_after_steps=10, analyze=False)
    assert done["stopped"] and done["steps"] == 10
