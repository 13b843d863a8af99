"""The loop's chunks: where they end, and that a chunk call equals the per-batch calls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from apps.training.chunk import fresh_health, make_chunk_fn, single_steps
from apps.training.chunk_plan import LoopSchedule, crossed
from sae_jax.buffer import create_buffer, push
from sae_jax.config import SAETrainConfig
from sae_jax.model import create_sae
from sae_jax.step import init_train_state, make_train_steps


def schedule(**changes):
    base = dict(total_batches=30, batch_size=16, buffer_size=128, min_buffer=64,
                steps_per_batch=1, log_every=5, checkpoint_every=10, batches_per_block=8)
    return LoopSchedule(**{**base, **changes})


def per_batch_events(s: LoopSchedule):
    """The per-batch loop's rules, batch by batch: (logs, checkpoints, stop batch)."""
    logs, ckpts, step = [], [], 0
    for g in range(s.total_batches):
        prev = step
        if s.trains(g):
            step += s.steps_per_batch
        final = g + 1 == s.total_batches
        stop = s.stop_after_steps is not None and step >= s.stop_after_steps
        if step == prev and not final:
            continue
        if s.trains(g) and (crossed(prev, step, s.log_every) or final or stop):
            logs.append(g)
        if step > 0 and (crossed(prev, step, s.checkpoint_every) or final or stop):
            ckpts.append(g)
        if stop:
            return logs, ckpts, g
    return logs, ckpts, None


@pytest.mark.parametrize("changes", [{}, dict(stop_after_steps=12), dict(steps_per_batch=3),
                                     dict(batches_per_block=1), dict(log_every=0)])
def test_chunks_cover_the_run_and_end_where_the_host_is_needed(changes):
    s = schedule(**changes)
    chunks = list(s.chunks(0))
    logs, ckpts, stop = per_batch_events(s)
    assert chunks[0].first == 0 and all(a.end == b.first for a, b in zip(chunks, chunks[1:]))
    assert chunks[-1].end == (s.total_batches if stop is None else stop + 1)
    assert [g for c in chunks for g in c.log_at] == logs
    assert [c.end - 1 for c in chunks if c.checkpoint] == ckpts
    assert [c.stop for c in chunks] == [False] * (len(chunks) - 1) + [stop is not None]
    first_train = s.first_training_batch()
    assert first_train == 3  # 4 batches of 16 reach min_buffer 64
    for c in chunks:
        assert c.end - c.first <= s.batches_per_block
        assert s.block_of(c.first) == s.block_of(c.end - 1)  # never across a block
        assert all(s.trains(g) == c.train for g in range(c.first, c.end))
    # Resuming from any checkpoint gives the same chunks from there on.
    for c in chunks:
        if c.checkpoint and not c.stop:
            rest = [x for x in chunks if x.first >= c.end]
            assert list(s.chunks(c.end)) == rest


def test_steps_after_counts_training_batches():
    s = schedule(steps_per_batch=4)
    assert [s.steps_after(g) for g in (-1, 0, 2, 3, 4, 29)] == [0, 0, 0, 4, 8, 108]


CFG = SAETrainConfig(expansion_factor=2.0, lr=3e-3, l1_coeff=1e-3, l1_warmup_steps=5,
                     usage_warmup_steps=5, usage_period=50, buffer_size=64, min_buffer=16,
                     primary_batch_size=8, sae_batch_size=16, sae_steps_per_primary_step=2,
                     resample_steps=(6,), seed=0)


def test_chunk_equals_push_then_steps_per_batch():
    d, batches, total = 8, 4, 40
    rng = np.random.default_rng(0)
    staging = jnp.asarray(rng.standard_normal((batches, 8, d)), jnp.float32)
    table = jnp.asarray(rng.standard_normal((5, d)), jnp.float32)
    is_null = jnp.asarray(rng.random((batches, 8)) < 0.3)
    weapons = jnp.asarray(rng.integers(0, 5, (batches, 8)), jnp.int32)
    key = jax.random.key(3)
    prefill = jnp.asarray(rng.standard_normal((16, d)), jnp.float32)

    def fresh():
        state = init_train_state(create_sae(CFG.sae_config(d), seed=0), CFG, total)
        return state, push(create_buffer(64, d), prefill)

    # Per batch, as the loop used to: push the batch's rows, then the steps.
    state, buf = fresh()
    steps = make_train_steps(CFG, total, 2)
    want_metrics = []
    for i in range(1, batches):
        x = jnp.where(is_null[i][:, None], table[weapons[i]], staging[i])
        buf = push(buf, x)
        state, m = steps(state, buf, key)
        want_metrics.append(m)
    # One chunk call for batches 1..3 of the block.
    got_state, got_buf = fresh()
    chunk = make_chunk_fn(single_steps(CFG, total, 2), batches, train=True)
    got_state, got_buf, health, metrics = chunk(got_state, got_buf, key, fresh_health(),
                                                staging, table, is_null, weapons,
                                                np.int32(1), np.int32(3))
    np.testing.assert_array_equal(np.asarray(got_buf.data), np.asarray(buf.data))
    for k in state.params:
        np.testing.assert_allclose(np.asarray(got_state.params[k]), np.asarray(state.params[k]),
                                   rtol=1e-6, atol=1e-7, err_msg=k)
    assert int(got_state.step) == 6 and int(health.bad_activation_step) == -1
    for i, m in enumerate(want_metrics, start=1):
        for k in ("loss", "l0", "n_resampled", "step"):
            np.testing.assert_allclose(np.asarray(metrics[0][k][i]), np.asarray(m[k]), rtol=1e-6)
    assert float(metrics[0]["loss"][0]) == 0.0  # not run


def test_chunk_health_names_the_step_of_the_first_bad_batch():
    d, total = 8, 40
    staging = jnp.ones((3, 8, d), jnp.float32).at[2, 5, 0].set(jnp.nan)
    state = init_train_state(create_sae(CFG.sae_config(d), seed=0), CFG, total)
    buf = push(create_buffer(64, d), jnp.ones((16, d), jnp.float32))
    chunk = make_chunk_fn(single_steps(CFG, total, 2), 3, train=True)
    no_null = jnp.zeros((3, 8), bool)
    _, _, health, _ = chunk(state, buf, jax.random.key(0), fresh_health(), staging,
                            jnp.zeros((1, d)), no_null, jnp.zeros((3, 8), jnp.int32),
                            np.int32(0), np.int32(3))
    assert int(health.bad_activation_step) == 4  # batch 2 came after 2 batches of 2 steps
    fill_only = make_chunk_fn(single_steps(CFG, total, 2), 3, train=False)
    state = init_train_state(create_sae(CFG.sae_config(d), seed=0), CFG, total)
    _, buf, health, metrics = fill_only(state, create_buffer(64, d), jax.random.key(0),
                                        fresh_health(), staging, jnp.zeros((1, d)), no_null,
                                        jnp.zeros((3, 8), jnp.int32), np.int32(0), np.int32(2))
    assert metrics is None and int(buf.fill) == 16 and int(health.bad_activation_step) == -1
    with pytest.raises(ValueError, match="must be positive"):
        single_steps(CFG, total, 0)
    with pytest.raises(ValueError, match="must be positive"):
        make_chunk_fn(single_steps(CFG, total, 2), 0, train=True)
