"""The persistent compilation cache of primary.complete: where it lives, and who wins."""

import jax
import pytest

from runkit import compile_cache


@pytest.fixture
def restore_jax_config():
    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    saved = {k: getattr(jax.config, k) for k in keys}
    yield
    for k, v in saved.items():
        jax.config.update(k, v)


def test_default_folder_under_the_user_cache(tmp_path, monkeypatch, restore_jax_config):
    monkeypatch.delenv(compile_cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = compile_cache.use_persistent_cache()
    assert folder == tmp_path / "splat-sae-jax" / "jax" and folder.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(folder)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0


def test_the_environment_wins(tmp_path, monkeypatch, restore_jax_config):
    monkeypatch.setenv(compile_cache.CACHE_ENV, str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.use_persistent_cache() == tmp_path / "mine"
    assert not (tmp_path / "xdg").exists()


def test_an_unwritable_place_leaves_the_cache_off(tmp_path, monkeypatch, restore_jax_config):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(compile_cache.CACHE_ENV, str(blocker / "jax"))
    before = jax.config.jax_compilation_cache_dir
    assert compile_cache.use_persistent_cache() is None
    assert jax.config.jax_compilation_cache_dir == before
