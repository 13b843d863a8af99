"""The benchmark harness's own arithmetic and inputs (no torch needed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import harvest_bench, sae_bench
from benchmarks.timing import time_calls
from primary.model import PrimaryConfig
from sae_jax.config import SAETrainConfig
from sae_jax.losses import sae_loss
from sae_jax.model import SAEConfig, create_sae


def _xla_flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def test_matmul_chain_does_the_counted_work():
    # Shapes where the matmuls dwarf the elementwise work, so XLA's count is ~all matmul.
    b, d, h = 64, 256, 512
    x = jnp.ones((b, d))
    we, wd = jnp.ones((d, h)), jnp.ones((h, d))
    counted = sae_bench.sae_step_flops(b, d, h, bias_grad_matmul=False)
    xla = _xla_flops(lambda x, we, wd: sae_bench._matmul_chain(x, we, wd, steps=1), x, we, wd)
    assert counted <= xla <= 1.05 * counted


@pytest.mark.parametrize("original_behaviour", [False, True])
def test_step_flop_count_matches_the_real_loss_gradient(original_behaviour):
    b, d, h = 64, 256, 512
    params = create_sae(SAEConfig(d, h / d)).params()
    x = jax.random.normal(jax.random.key(0), (b, d))
    cfg = SAETrainConfig(original_behaviour=original_behaviour, resample_steps=())
    ema = jnp.zeros((h,))
    xla = _xla_flops(jax.grad(lambda p: sae_loss(p, x, ema, 10, cfg)[0]), params)
    counted = sae_bench.sae_step_flops(b, d, h, learn_decoder=not original_behaviour)
    assert counted <= xla
    # The count covers the matmuls; the rest is elementwise (at most ~100 ops per (b, h)),
    # far less than one more (b, d, h) matmul (2bdh = 512 per (b, h) here).
    assert xla - counted < 100 * b * h + 50 * d * h


def test_original_loop_counts_its_second_forward():
    b, d, h = 8, 4, 16
    loop = sae_bench.sae_step_flops(b, d, h, learn_decoder=False, bias_grad_matmul=True,
                                    second_forward=True)
    assert loop - sae_bench.sae_step_flops(b, d, h, learn_decoder=False,
                                           bias_grad_matmul=True) == 4 * b * d * h
    assert loop > sae_bench.sae_step_flops(b, d, h)


def test_random_builds_are_valid_padded_sets():
    cfg = PrimaryConfig(vocab_size=20, weapon_vocab_size=5, embedding_dim=4, hidden_dim=8,
                        num_layers=1, num_heads=2, num_inducing_points=2)
    tokens, weapons, mask = harvest_bench.random_builds(cfg, batch=50, length=7, seed=3)
    assert tokens.shape == mask.shape == (50, 7) and weapons.shape == (50, 1)
    np.testing.assert_array_equal(mask, tokens == cfg.pad_token_id)
    assert (~mask[:, 0]).all()  # at least one token per build
    assert (np.diff(mask.astype(int), axis=1) >= 0).all()  # right-padded
    assert weapons.min() >= 0 and weapons.max() < cfg.weapon_vocab_size


def test_demo_config_reads_the_flagfile(tmp_path):
    flags = tmp_path / "primary_demo.flags"
    flags.write_text("# demo\n--hidden_dim=96\n--num_layers=1\n--use_layer_norm=false\n"
                     "--learning_rate=0.1\n")
    cfg, source = harvest_bench.demo_config(str(flags))
    assert (cfg.hidden_dim, cfg.num_layers, cfg.use_layer_norm) == (96, 1, False)
    assert cfg.num_heads == harvest_bench.DEMO_FALLBACK.num_heads
    assert source == str(flags)
    cfg, source = harvest_bench.demo_config(str(tmp_path / "missing.flags"))
    assert cfg == harvest_bench.DEMO_FALLBACK and "built-in" in source


def test_time_calls_counts_every_rep():
    calls = []
    t = time_calls(lambda: calls.append(1), reps=4, warmup=2)
    assert len(calls) == 6 and len(t["all"]) == 4
    assert t["best"] <= t["median"]
