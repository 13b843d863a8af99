"""Damaged checkpoints are detected, named and skipped; never a raw storage traceback."""

import jax.numpy as jnp
import numpy as np
import pytest

from runkit.checkpoints import MANIFEST, Checkpoints, NoIntactCheckpoint


def tree(step):
    return {"w": jnp.full((64, 8), float(step)), "opt": (jnp.arange(5) * step, jnp.int32(step))}


LIKE = tree(0)


@pytest.fixture
def three(tmp_path):
    with Checkpoints(tmp_path / "ckpt") as c:
        for step in (10, 20, 30):
            c.save(step, tree(step), {"next_batch": step + 1})
    return tmp_path / "ckpt"


def _largest_file(step_dir):
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST]
    return max(files, key=lambda p: p.stat().st_size)


def delete(p):
    p.unlink()


def truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def flip(p):
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


def drop_manifest(step_dir):
    (step_dir / MANIFEST).unlink()


@pytest.mark.parametrize("damage", [delete, truncate, flip], ids=["deleted", "truncated",
                                                                  "bytes-flipped"])
def test_damaged_newest_falls_back_to_the_newest_intact(three, damage, capsys):
    victim = _largest_file(three / "30")
    damage(victim)
    with Checkpoints(three) as c:
        got = c.restore_latest(LIKE)
    assert got.step == 20 and got.progress["next_batch"] == 21
    np.testing.assert_array_equal(got.tree["w"], np.full((64, 8), 20.0))
    out = capsys.readouterr().out
    assert "checkpoint at step 30 is damaged" in out and victim.name in out
    # The damaged step is set aside, kept, and the run can write that step again.
    kept = list((three.parent / "ckpt.damaged").iterdir())
    assert [p.name.split(".")[0] for p in kept] == ["30"]
    with Checkpoints(three) as c:
        assert c.steps() == [10, 20]
        c.save(30, tree(31), {"next_batch": 32})
        assert c.restore_latest(LIKE).progress["next_batch"] == 32


def test_missing_manifest_counts_as_damaged(three, capsys):
    drop_manifest(three / "30")
    with Checkpoints(three) as c:
        assert c.restore_latest(LIKE).step == 20
    assert f"no readable {MANIFEST}" in capsys.readouterr().out


def test_every_checkpoint_damaged_is_one_clear_error(three):
    for step in (10, 20, 30):
        flip(_largest_file(three / str(step)))
    with Checkpoints(three) as c, pytest.raises(NoIntactCheckpoint) as err:
        c.restore_latest(LIKE)
    message = str(err.value)
    assert "every checkpoint" in message
    assert all(f"step {s}:" in message for s in (10, 20, 30))
    assert "Traceback" not in message and "tensorstore" not in message.lower()


def test_no_checkpoint_is_none(tmp_path):
    with Checkpoints(tmp_path / "empty") as c:
        assert c.restore_latest(LIKE) is None


def test_intact_checkpoints_restore_exactly(three):
    with Checkpoints(three) as c:
        got = c.restore(10, LIKE)
    assert got.step == 10
    np.testing.assert_array_equal(got.tree["opt"][0], np.arange(5) * 10)
    assert int(got.tree["opt"][1]) == 10


def test_truncated_model_parameters_are_named_and_late_reads_stay_quiet(tmp_path, monkeypatch):
    import sys
    from types import SimpleNamespace

    from runkit.checkpoints import load_tree, save_tree

    like = {"a": np.zeros((256, 64), np.float32), "b": np.zeros((128, 32), np.float32)}
    rng = np.random.default_rng(0)  # random values: the stored files do not compress away
    save_tree(tmp_path / "params", {k: rng.normal(size=v.shape) for k, v in like.items()})
    arrays = [p for p in (tmp_path / "params").rglob("*") if p.is_file() and p.parent.name == "d"]
    truncate(max(arrays, key=lambda p: p.stat().st_size))
    shown = []
    monkeypatch.setattr(sys, "unraisablehook", shown.append)
    with pytest.raises(ValueError, match="params: the stored parameters are damaged or truncated"):
        load_tree(tmp_path / "params", like)
    # Reads still in flight report to a closed event loop: dropped. Anything else: shown.
    late = SimpleNamespace(exc_value=RuntimeError("Event loop is closed"))
    other = SimpleNamespace(exc_value=RuntimeError("something else"))
    sys.unraisablehook(late)
    sys.unraisablehook(other)
    assert shown == [other]


def test_model_parameters_with_damaged_metadata_are_named(tmp_path):
    from runkit.checkpoints import load_tree, save_tree

    like = {"a": np.zeros((8, 4), np.float32)}
    save_tree(tmp_path / "params", like)
    truncate(tmp_path / "params" / "_METADATA")
    with pytest.raises(ValueError, match="damaged or truncated .their metadata names no arrays"):
        load_tree(tmp_path / "params", like)


def test_a_full_disk_is_one_error_naming_the_directory_and_the_partial_save_goes(
        tmp_path, monkeypatch):
    import errno

    with Checkpoints(tmp_path / "ckpt") as c:
        c.save(10, tree(10), {})

        def full(step, args, force):
            (c.directory / f"{step}.orbax-checkpoint-tmp" / "state").mkdir(parents=True)
            raise ValueError('RESOURCE_EXHAUSTED: Error writing "w/0": Failed to write 512 '
                             "bytes to file 8: No space left on device [os_error_code='28']")

        monkeypatch.setattr(c._manager, "save", full)
        with pytest.raises(OSError, match="no space left on the device while writing the "
                                          f"checkpoint of step 20 in {c.directory}") as e:
            c.save(20, tree(20), {})
        assert e.value.errno == errno.ENOSPC
        assert not list(c.directory.glob("20.*"))
        monkeypatch.undo()
        assert c.steps() == [10]


def test_a_save_cut_short_is_cleaned_when_the_checkpoints_open_again(three):
    (three / "40.orbax-checkpoint-tmp" / "state.orbax-checkpoint-tmp").mkdir(parents=True)
    with Checkpoints(three) as c:
        assert c.steps() == [10, 20, 30]
    assert not (three / "40.orbax-checkpoint-tmp").exists()


def test_orbax_thread_tracebacks_are_not_logged_twice():
    import logging

    from runkit.checkpoints import _DropOrbaxThreadTracebacks

    def record(path, msg):
        return logging.LogRecord("absl", logging.ERROR, path, 1, msg, (), None)

    keep = _DropOrbaxThreadTracebacks().filter
    assert not keep(record("/x/orbax/checkpoint/_src/futures/future.py",
                           "[process=0] _SignalingThread.run() raised an exception: %s"))
    assert keep(record("/x/orbax/checkpoint/checkpoint_manager.py", "Saving step 5"))
    assert keep(record("/x/ours.py", "_SignalingThread.run() raised an exception"))
