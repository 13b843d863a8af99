"""Our side of the SAELens peer benchmark and its plot, without torch or SAELens: the
single runs and the stacked sweep train the planned steps on an array, and the plot is
drawn from flat runs."""

import numpy as np
import pytest

from benchmarks import peer_ours, peer_plot, peer_recipes

PLAN = peer_recipes.Plan(d_in=8, width=16, k=2, batch=64, samples=64 * 60, train_rows=512)


@pytest.fixture(scope="module")
def buffer():
    rng = np.random.default_rng(0)
    return peer_ours.array_buffer(rng.normal(size=(PLAN.train_rows, PLAN.d_in)))


def test_calls_cover_the_steps_in_full_scans_then_the_rest():
    assert peer_ours._calls(120) == [50, 50, 20]
    assert peer_ours._calls(100) == [50, 50]
    assert peer_ours._calls(7) == [7]


def test_a_single_run_trains_every_planned_step(buffer):
    trained = peer_ours.train_single(peer_recipes.ours_config("topk", PLAN, seed=1),
                                     PLAN.steps, buffer)
    assert trained.steps == PLAN.steps == 60
    assert trained.params["W_dec"].shape == (PLAN.width, PLAN.d_in)
    assert trained.final_l0 == pytest.approx(PLAN.k)  # TopK: exactly k per row
    assert 0 < trained.first_call_s <= trained.wall_s


def test_the_sweep_trains_every_member_of_every_stack_apart(buffer):
    stacks = [[peer_recipes.ours_config(arch, PLAN, seed) for seed in (0, 1)]
              for arch in ("relu_l1", "batchtopk")]
    members, wall = peer_ours.train_sweep(stacks, PLAN.steps, buffer, key_seed=0, steps=20)
    assert [len(m) for m in members] == [2, 2]
    for stack in members:
        first, second = stack
        assert first.steps == second.steps == 20
        assert first.wall_s == second.wall_s == wall > 0
        # Different seeds: different initial parameters, so different trained ones.
        assert not np.allclose(first.params["W_enc"], second.params["W_enc"])
    assert members[0][0].sae_config.arch.name == "relu_l1"


def test_the_plot_is_drawn_from_flat_runs(tmp_path):
    runs = [{"library": lib, "architecture": arch, "seed": seed, "l0": 5.0 + seed,
             "f1": 0.3 + 0.1 * seed, "mcc": 0.5 + 0.05 * seed}
            for lib in ("ours", "saelens") for arch in ("topk", "jumprelu") for seed in (0, 1)]
    out = peer_plot.plot_peer(runs, true_l0=6.4, out_png=tmp_path / "sub" / "peer.png")
    assert out == tmp_path / "sub" / "peer.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
