"""Stacked SAE training: a vmapped stack equals its members trained one by one (members
that differ in seed and in every kind of dynamic setting, through a resampling step)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sae_jax.buffer import create_buffer, push
from sae_jax.config import SAETrainConfig
from sae_jax.model import create_sae
from sae_jax.stack import (
    group_into_stacks,
    make_stacked_train_steps,
    member_state,
    stack_settings,
    stack_states,
)
from sae_jax.step import init_train_state, make_train_steps

D = 8
BASE = SAETrainConfig(
    expansion_factor=4, lr=3e-3, l1_coeff=1e-3, l1_warmup_steps=4, usage_warmup_steps=4,
    usage_period=50, sae_batch_size=32, buffer_size=256, min_buffer=32, resample_steps=(2,),
    dead_after_rows=64,
)
TOTAL, CHUNK, CALLS = 20, 2, 2


def _buffer(seed=0, rows=256):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    basis = jax.random.normal(k1, (3, D))
    codes = jax.random.uniform(k2, (rows, 3)) * jax.random.bernoulli(k3, 0.4, (rows, 3))
    return push(create_buffer(BASE.buffer_size, D), codes @ basis)


def _state(cfg):
    return init_train_state(create_sae(cfg.sae_config(D), seed=cfg.seed), cfg, TOTAL)


# Each case: members that differ in dynamic settings and seed (one stack).
CASES = {
    "relu_l1": [dict(seed=0), dict(seed=1, l1_coeff=3e-3, lr=1e-3, usage_coeff=0.5,
                                   target_usage=0.1, weight_decay=0.0)],
    "topk": [dict(architecture="topk", k=4, resample_steps=(), seed=s, aux_coeff=a, lr=lr)
             for s, a, lr in ((0, 1 / 32, 3e-3), (1, 0.1, 1e-3))],
    "jumprelu": [dict(architecture="jumprelu", seed=s, l0_coeff=c, lr=lr)
                 for s, c, lr in ((0, 1e-3, 3e-3), (3, 1e-2, 2e-3))],
    # Nested prefix losses, the BatchTopK threshold and AuxK, all inside the vmap.
    "matryoshka": [dict(architecture="matryoshka", k=4, matryoshka_groups=(8, 8, 16),
                        resample_steps=(), seed=s, aux_coeff=a, lr=lr)
                   for s, a, lr in ((0, 1 / 32, 3e-3), (2, 0.1, 1e-3))],
}


# One architecture (the quickest) in the main pass; the others (up to half a minute each)
# in the slow one.
@pytest.mark.parametrize("case", [
    case if case == "topk" else pytest.param(case, marks=pytest.mark.slow)
    for case in sorted(CASES)])
def test_stack_equals_members_one_by_one(case):
    cfgs = [dataclasses.replace(BASE, **m) for m in CASES[case]]
    assert group_into_stacks(cfgs) == [list(range(len(cfgs)))]
    buf, key = _buffer(), jax.random.key(7)

    stacked = stack_states([_state(c) for c in cfgs])
    fn = make_stacked_train_steps(cfgs[0], TOTAL, CHUNK)
    settings = stack_settings(cfgs)
    stack_metrics = []
    for _ in range(CALLS):
        stacked, m = fn(stacked, settings, buf, key)
        stack_metrics.append(jax.device_get(m))
    assert int(stacked.step) == CHUNK * CALLS

    for i, cfg in enumerate(cfgs):
        single, single_fn = _state(cfg), make_train_steps(cfg, TOTAL, CHUNK)
        for call in range(CALLS):
            single, m = single_fn(single, buf, key)
            for name in ("loss", "mse", "l0"):
                np.testing.assert_allclose(stack_metrics[call][name][i], float(m[name]),
                                           rtol=1e-5, atol=1e-6, err_msg=f"{case} {i} {name}")
        mine = member_state(stacked, i)
        assert int(mine.step) == int(single.step)
        named = jax.tree_util.tree_leaves_with_path(single)
        for (path, want), got in zip(named, jax.tree.leaves(mine)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5,
                                       err_msg=f"{case} member {i} {jax.tree_util.keystr(path)}")


def test_grouping_and_refusals():
    cfgs = [BASE, dataclasses.replace(BASE, seed=4, lr=1e-2),
            dataclasses.replace(BASE, expansion_factor=2),
            dataclasses.replace(BASE, architecture="topk", k=4, resample_steps=()),
            dataclasses.replace(BASE, architecture="topk", k=8, resample_steps=())]
    assert group_into_stacks(cfgs) == [[0, 1], [2], [3], [4]]
    with pytest.raises(ValueError, match="expansion_factor"):
        stack_settings([cfgs[0], cfgs[2]])
    with pytest.raises(ValueError, match="same step"):
        s = _state(BASE)
        stack_states([s, s._replace(step=jnp.ones((), jnp.int32))])
