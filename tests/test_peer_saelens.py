"""The SAELens peer benchmark end to end at toy sizes (``--quick``), and its SAELens-side
helpers.

Skipped where SAELens is not installed: it is a benchmark-only dependency
(``benchmarks/requirements.txt``, with torch), absent from the project's requirements and
from CI's environment. Slow: importing SAELens alone takes 5-20 s, and the smoke run trains
eight SAEs and two sweeps.
"""

import json

import numpy as np
import pytest

pytest.importorskip("sae_lens", reason="benchmark-only dependency (benchmarks/requirements.txt)")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from benchmarks import peer_saelens

    out = tmp_path_factory.mktemp("peer") / "peer.json"
    result = peer_saelens.main(["--quick", "--seed", "3", "--out", str(out)])
    return result, json.loads(out.read_text()), out


def test_every_run_is_scored_by_both_yardsticks(smoke):
    _, written, _ = smoke
    runs = written["runs"]
    # Two architectures x two seeds x two libraries.
    assert len(runs) == 8
    assert {(r["library"], r["architecture"], r["seed"]) for r in runs} == {
        (lib, arch, seed) for lib in ("ours", "saelens") for arch in ("relu_l1", "topk")
        for seed in (3, 4)}
    for r in runs:
        assert 0 <= r["f1"] <= 1 and 0 <= r["mcc"] <= 1
        assert 0 <= r["recovered_fraction"] <= 1 and r["l0"] > 0
        assert r["samples"] == written["plan"]["steps"] * written["plan"]["batch"]
    topk = [r for r in runs if r["architecture"] == "topk"]
    assert all(r["l0"] == pytest.approx(written["plan"]["k"]) for r in topk)


def test_our_saes_read_by_saelens_give_our_latents(smoke):
    _, written, _ = smoke
    for r in (r for r in written["runs"] if r["library"] == "ours"):
        check = r["encoding_check"]
        assert check["rows"] > 0
        assert check["max_abs_diff_relative"] < 1e-5, r["architecture"]
        assert check["firing_mismatch_fraction"] < 1e-3
        assert r["clipped_fraction"] == 0.0


def test_summary_holds_the_asked_figures_and_they_add_up(smoke):
    _, written, out = smoke
    s = written["summary"]
    for key in ("ours_best_f1", "saelens_best_f1", "ours_best_mcc", "saelens_best_mcc",
                "throughput_ratio", "sweep_ratio"):
        assert np.isfinite(s[key]) and s[key] >= 0, key
    sweep = written["sweep"]
    assert s["sweep_ratio"] == pytest.approx(sweep["saelens_wall_s"] / sweep["ours_wall_s"])
    assert sweep["members"] == 4
    ours = [r for r in written["runs"] if r["library"] == "ours"]
    assert s["ours_samples_per_s"] == pytest.approx(
        sum(r["samples"] for r in ours) / sum(r["wall_s"] for r in ours))
    assert s["ours_best_f1"] == max(
        libs["ours"]["f1"]["mean"] for libs in written["per_architecture"].values())
    assert (out.with_suffix(".png")).stat().st_size > 10_000
    assert written["threads"]["torch"] == 2


def test_array_batches_cover_the_array_once_per_pass():
    from benchmarks.peer_theirs import ArrayBatches

    array = np.arange(40, dtype=np.float32).reshape(20, 2)
    batches = ArrayBatches(array, batch=5, seed=0)
    first_pass = np.concatenate([next(batches).numpy() for _ in range(4)])
    assert sorted(first_pass[:, 0].tolist()) == list(range(0, 40, 2))
    assert next(batches).shape == (5, 2)  # a new pass starts


def test_replay_hands_out_the_stored_rows_in_order_and_no_more():
    from benchmarks.peer_world import Replay

    features = np.arange(12, dtype=np.float32).reshape(6, 2)
    replay = Replay(features)
    np.testing.assert_array_equal(replay.sample(4).numpy(), features[:4])
    with pytest.raises(ValueError, match="only 6 are stored"):
        replay.sample(3)
    np.testing.assert_array_equal(replay.rewind().sample(2).numpy(), features[:2])


def test_every_architecture_names_a_saelens_training_class():
    from sae_lens.registry import get_sae_training_class

    from sae_jax.architectures import ARCHITECTURES, get_architecture

    for name in ARCHITECTURES:
        training_class, _ = get_sae_training_class(get_architecture(name).saelens_training_name())
        assert training_class.__name__.endswith("TrainingSAE")
