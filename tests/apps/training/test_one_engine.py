"""One training engine: a single run and a one-member sweep of the same settings run the same
loop (apps.training.engine) and end with the same parameters, metrics log and final metrics."""

import json

import jax
import numpy as np
import pytest

from apps.training.single_run import train_sae
from apps.training.sweep_run import SweepMember, train_sweep
from primary.model_dir import save_primary
from sae_jax.config import SAETrainConfig
from sae_jax.sae_dir import load_sae
from tests.tiny_setup import primary_for, tiny_world

# 60 builds -> 15 primary batches of 16 per epoch; SAE steps from batch 4, 2 per batch: 24.
# Resampling at step 12 (13 features dead by then) falls between the lines of steps 10 and
# 16, so a line's n_resampled must count the batches since the previous line, not only its own.
CFG = SAETrainConfig(
    expansion_factor=2.0, lr=3e-3, l1_coeff=0.1, dead_threshold=0.05, l1_warmup_steps=10,
    usage_warmup_steps=10, usage_period=100, buffer_size=128, min_buffer=64,
    primary_batch_size=16, sae_batch_size=32,
    sae_steps_per_primary_step=2, epochs=1, data_fraction=1.0, resample_steps=(12,),
    num_builds=60, seed=0, log_every=5, checkpoint_every=8, eval_builds=20,
)
# The sweep's step is the single run's step vmapped over a member axis of length one (the
# member's settings as traced values): XLA compiles that to other kernels, whose float32
# rounding differs in the last bits (measured: parameters within 6e-8, metrics lines within
# 2 ulp). Exact equality would need the sweep to special-case its one-member stacks.
RTOL, ATOL = 1e-5, 1e-6
# Keys of metrics.json only a sweep member has.
SWEEP_ONLY = {"sweep", "trained_in_stack_of"}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_engine")
    _, vocab, weapon_vocab = tiny_world(CFG.num_builds, CFG.seed)
    save_primary(root / "model", primary_for(vocab, weapon_vocab), vocab, weapon_vocab)
    # One device for both: a sweep trains on one device.
    single = train_sae(CFG, root / "single", primary_dir=root / "model",
                       devices=jax.devices()[:1], analyze=False)
    sweep = train_sweep(CFG, [SweepMember("only", CFG)], root / "sweep",
                        primary_dir=root / "model", analyze=False)
    return root / "single", root / "sweep" / "members" / "only", single, sweep["only"]


def _lines(rundir):
    return [json.loads(x) for x in (rundir / "metrics.jsonl").read_text().splitlines()]


def test_equal_parameters(both):
    single_dir, member_dir, _, _ = both
    want, got = (load_sae(d / "sae").params() for d in (single_dir, member_dir))
    assert sorted(want) == sorted(got)
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=RTOL,
                                   atol=ATOL, err_msg=k)


def test_same_metrics_log(both):
    single_dir, member_dir, _, _ = both
    want, got = _lines(single_dir), _lines(member_dir)
    assert [r["step"] for r in got] == [r["step"] for r in want] == [6, 10, 16, 20, 24]
    assert sum(r["n_resampled"] for r in want) > 0  # the resampling is in the log
    for a, b in zip(want, got):
        assert list(a) == list(b)  # the same keys, in the same order
        for k in a:
            if k == "seconds":
                continue
            if isinstance(a[k], float):
                np.testing.assert_allclose(b[k], a[k], rtol=RTOL, atol=ATOL,
                                           err_msg=f"step {a['step']} {k}")
            else:
                assert b[k] == a[k], (a["step"], k)


def test_same_final_metrics(both):
    _, _, single, member = both
    assert set(member) - set(single) == SWEEP_ONLY and set(single) <= set(member)
    for k, want in single.items():
        if k in ("seconds", "num_devices"):
            continue
        got = member[k]
        if k == "final_train":
            assert list(got) == list(want)
            np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=RTOL,
                                       atol=ATOL)
        elif isinstance(want, float):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=k)
        else:
            assert got == want, k


def test_a_non_finite_loss_stops_a_single_run_and_marks_only_its_sweep_member(tmp_path):
    """The loop's NaN guard is the plugged-in steps' to set: a single run's ``loss_ok`` stops
    the run; a sweep's steps go on and mark the member whose loss became non-finite."""
    from apps.runs.setup import RunPlan
    from apps.training.single_run import single_trainee
    from apps.training.sweep_run import sweep_trainee
    from runkit.sharding import make_mesh
    from sae_jax.buffer import create_buffer, push

    d = 8
    plan = RunPlan(batches_per_epoch=10, epochs=1, first_train_batch=1, sae_steps_per_batch=2)
    mesh = make_mesh(jax.devices()[:1])
    rows = jax.random.normal(jax.random.key(1), (64, d))
    key = jax.random.key(2)

    def buffer():  # a fresh one per call: the steps' callers donate what they pass
        return push(create_buffer(CFG.buffer_size, d), rows)

    single = single_trainee(CFG, plan, CFG.sae_config(d), mesh, tmp_path / "single")
    state = single.state
    bad_single = state._replace(params={**state.params, "W_enc": state.params["W_enc"] * np.nan})
    assert bool(single.steps.run(state, buffer(), key)[2])
    assert not bool(single.steps.run(bad_single, buffer(), key)[2])

    members = [SweepMember("a", CFG), SweepMember("b", CFG)]
    sweep = sweep_trainee([members], plan, lambda c: c.sae_config(d), mesh, tmp_path / "sweep")
    (stacked,), settings, healthy = sweep.state
    w_enc = stacked.params["W_enc"]
    bad_member = stacked._replace(params={**stacked.params, "W_enc": w_enc.at[1].set(np.nan)})
    healthy = sweep.steps.run(([stacked], settings, healthy), buffer(), key)[0][2]
    assert np.asarray(healthy[0]).tolist() == [True, True]
    out, _, ok = sweep.steps.run(([bad_member], settings, healthy), buffer(), key)
    assert bool(ok)  # not fatal
    assert np.asarray(out[2][0]).tolist() == [True, False]
    assert np.all(np.isfinite(np.asarray(out[0][0].params["W_enc"][0])))
