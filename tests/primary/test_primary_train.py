"""End-to-end primary training: outputs, finished-run reuse, exact resume, sharding, bad input."""

import dataclasses
import json

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from primary import training
from primary.examples import Examples
from primary.model import create_model
from primary.model_dir import load_primary
from primary.training import PrimaryTrainConfig, eval_primary, prepare_data, train_primary
from primary.vocab import Vocab
from runkit.checkpoints import Checkpoints

# 60 synthetic builds -> 42 train builds x 6 examples = 252 -> 7 steps of 32 per epoch.
TINY = PrimaryTrainConfig(
    embedding_dim=8, hidden_dim=16, num_layers=1, num_heads=2, num_inducing_points=4,
    lr=3e-3, batch_size=32, epochs=2, num_builds=60, seed=3, checkpoint_every=5, log_every=2,
)


def params_of(workdir):
    model, _, _ = load_primary(workdir / "model")
    return nnx.state(model, nnx.Param).to_pure_dict()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted run over all 4 forced CPU devices."""
    workdir = tmp_path_factory.mktemp("full")
    return workdir, train_primary(TINY, workdir)


def test_run_writes_metrics_and_a_loadable_model(full_run):
    workdir, metrics = full_run
    assert jax.device_count() == 4 and metrics["num_devices"] == 4
    for key in ("val_f1", "val_loss", "val_precision", "val_recall", "baseline_f1",
                "baseline_precision", "baseline_recall", "steps", "seconds", "num_params"):
        assert key in metrics, key
    for key in ("val_f1", "val_precision", "val_recall", "baseline_f1", "test_f1"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["steps"] == 2 * (252 // 32)
    assert json.loads((workdir / "metrics.json").read_text()) == metrics
    assert json.loads((workdir / "train_config.json").read_text()) == TINY.to_dict()
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if "val_f1" in r]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert epochs[-1]["val_f1"] == pytest.approx(metrics["val_f1"])
    assert all(np.isfinite(r["train_loss"]) for r in lines if "train_loss" in r)

    # The saved model reproduces the run's own validation numbers.
    model, vocab, _ = load_primary(workdir / "model")
    assert len(vocab) == metrics["vocab_size"]
    data = prepare_data(TINY)
    again = eval_primary(model, data.val, TINY.batch_size)
    assert again["f1"] == pytest.approx(metrics["val_f1"], abs=1e-6)
    assert again["loss"] == pytest.approx(metrics["val_loss"], rel=1e-5)


def test_finished_workdir_is_reused_and_a_different_config_refused(full_run, monkeypatch):
    workdir, metrics = full_run

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run must not load data again")

    monkeypatch.setattr(training, "prepare_data", no_training)
    assert train_primary(TINY, workdir) == metrics
    with pytest.raises(ValueError, match="hidden_dim: 16 -> 32"):
        train_primary(dataclasses.replace(TINY, hidden_dim=32), workdir)


def test_killed_and_resumed_run_ends_with_the_same_parameters(full_run, tmp_path):
    workdir, metrics = full_run
    out = train_primary(TINY, tmp_path, stop_after_steps=8)
    assert out == {"stopped_at_step": 8}
    assert not (tmp_path / "model").exists()
    with Checkpoints(tmp_path / "checkpoints") as ckpts:
        assert ckpts.steps()[-1] == 5  # steps 6 to 8 are lost, as in a kill
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "train_lo')  # the kill also tore a log line in half
    resumed = train_primary(TINY, tmp_path)
    assert resumed["steps"] == metrics["steps"]
    jax.tree.map(np.testing.assert_array_equal, params_of(tmp_path), params_of(workdir))
    assert resumed["val_f1"] == metrics["val_f1"]
    # Log lines of the lost steps were dropped, so each step is logged once, and every line
    # equals the uninterrupted run's: the first after the resume (step 6) averages steps 5
    # and 6 as that run's does, though the checkpoint came between them.
    def losses(run):
        return [(r["step"], r["train_loss"]) for r in map(
            json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "train_loss" in r]

    assert [step for step, _ in losses(tmp_path)] == list(range(2, metrics["steps"] + 1, 2))
    assert losses(tmp_path) == losses(workdir)


def drop_key_biases(params: dict) -> dict:
    """Attention key biases cut out of the in_proj bias [q | k | v]: a key bias shifts all of a
    query's scores equally, which softmax ignores, so its gradient is zero up to float noise
    that Adam rescales into full-size steps (their effect on the output is null all the same)."""
    def cut(path, x):
        if jax.tree_util.keystr(path).endswith("['in_proj']['bias']"):
            d = x.shape[0] // 3
            return np.concatenate([x[:d], x[2 * d:]])
        return x

    return jax.tree_util.tree_map_with_path(cut, params)


def params_at_checkpoint(workdir, step: int, metrics: dict) -> dict:
    model_cfg = TINY.model_config(metrics["vocab_size"], metrics["weapon_vocab_size"],
                                  Vocab.canonical().pad_id)
    _, params = nnx.split(create_model(model_cfg, TINY.seed), nnx.Param)
    like = (params, training.make_optimizer(TINY.lr, TINY.weight_decay).init(params))
    with Checkpoints(workdir / "checkpoints") as ckpts:
        got = ckpts.restore(step, like)
    assert got.progress["step"] == step
    return got.tree[0].to_pure_dict()


def test_four_devices_match_one(full_run, tmp_path):
    workdir, metrics = full_run
    assert train_primary(TINY, tmp_path, devices=jax.devices()[:1], stop_after_steps=5) == {
        "stopped_at_step": 5}
    one, four = (params_at_checkpoint(d, 5, metrics) for d in (tmp_path, workdir))
    # Sums over 4 shards run in another order; Adam divides by the gradient's own scale, so
    # on the few elements whose gradient is near zero that float noise moves the parameter by
    # a small fraction of lr (3e-3) per step.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 drop_key_biases(one), drop_key_biases(four))


def _examples(model_cfg, tokens, weapons):
    tokens = np.asarray(tokens, np.int32)
    pad = model_cfg.pad_token_id
    lengths = (tokens != pad).sum(1).astype(np.int32)
    targets = np.zeros((len(tokens), model_cfg.vocab_size), bool)
    return Examples(tokens, lengths, np.asarray(weapons, np.int32), np.arange(len(tokens)),
                    targets, pad, 0)


def test_bad_input_is_refused_before_jit_naming_the_value(full_run):
    workdir, _ = full_run
    model, _, _ = load_primary(workdir / "model")
    c = model.config
    good = _examples(c, [[1, 2, c.pad_token_id]], [[0]])
    with pytest.raises(ValueError, match=r"token id 999 at position \(0, 1\) of my set"):
        eval_primary(model, _examples(c, [[1, 999, c.pad_token_id]], [[0]]), 4, where="my set")
    bad_weapon = c.weapon_vocab_size
    with pytest.raises(ValueError, match=f"weapon id {bad_weapon} .* of my set"):
        eval_primary(model, dataclasses.replace(good, weapons=np.array([[bad_weapon]])), 4,
                     where="my set")
    with pytest.raises(ValueError, match="empty batch of token ids from my set"):
        eval_primary(model, _examples(c, np.zeros((0, 3)), np.zeros((0, 1))), 4, where="my set")
    with pytest.raises(ValueError, match="batch size 6 is not divisible by the 4 devices"):
        eval_primary(model, good, 6)


def test_batch_size_must_split_over_the_devices(tmp_path):
    with pytest.raises(ValueError, match="batch size 30 is not divisible by the 4 devices"):
        train_primary(dataclasses.replace(TINY, batch_size=30), tmp_path)


def test_non_finite_loss_stops_the_run_and_saves_no_model(tmp_path, monkeypatch):
    real_step = training.train_step_jit

    def poisoned(params, opt_state, batch, key, **kw):
        params, opt_state, loss = real_step(params, opt_state, batch, key, **kw)
        poisoned.calls += 1
        return params, opt_state, loss * np.nan if poisoned.calls >= 7 else loss

    poisoned.calls = 0
    monkeypatch.setattr(training, "train_step_jit", poisoned)
    with pytest.raises(training.PrimaryTrainingFault,
                       match=r"non-finite \(NaN or Inf\) by step 8; the last good checkpoint "
                             r"\(step 5\)"):
        train_primary(TINY, tmp_path)
    assert not (tmp_path / "model").exists() and not (tmp_path / "metrics.json").exists()
    with Checkpoints(tmp_path / "checkpoints") as ckpts:
        assert ckpts.steps() == [5]


def test_non_finite_evaluation_is_never_saved_as_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "_evaluate", lambda *a, **k: {"loss": float("nan"), "f1": 0.5})
    with pytest.raises(training.PrimaryTrainingFault, match=r"validation evaluation .* "
                                                            r"non-finite \['loss'\]"):
        train_primary(TINY, tmp_path)
    assert not (tmp_path / "model").exists() and not (tmp_path / "metrics.json").exists()


def test_a_batch_in_length_parts_has_the_loss_and_gradient_of_the_whole_batch():
    from primary.examples import iterate_batches, pad_to_width, part_layout, split_by_length

    data = prepare_data(TINY)
    cfg = TINY.model_config(len(data.vocab), len(data.weapon_vocab), data.vocab.pad_id)
    graphdef, params = nnx.split(create_model(cfg, 0), nnx.Param)
    layout = part_layout(data.train, 96, training.train_parts(96), seed=0, epochs=[0])
    assert len(layout) == 2 and layout[0][1] < layout[-1][1]
    batch = next(iterate_batches(data.train, 96, seed=0, epoch=0))
    whole = (pad_to_width(batch, 16, data.vocab.pad_id),)
    parts = split_by_length(batch, layout, data.vocab.pad_id)
    grad_fn = jax.jit(jax.value_and_grad(training.batch_loss), static_argnums=(3,))
    loss1, g1 = grad_fn(params, whole, None, graphdef)
    loss2, g2 = grad_fn(params, parts, None, graphdef)
    assert float(loss2) == pytest.approx(float(loss1), rel=1e-6)
    norm = float(optax.tree.norm(g1))
    assert norm > 1e-3
    assert float(optax.tree.norm(jax.tree.map(lambda a, b: a - b, g1, g2))) < 1e-5 * norm
    # Up to TRAIN_PARTS parts, none of them cut from too few rows.
    assert [training.train_parts(n) for n in (32, 96, 150, 256, 1024)] == [1, 2, 3, 4, 4]
