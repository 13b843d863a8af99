"""A persistent XLA compilation cache for commands that compile the same programs on every
call (``primary.complete``): the second call reads its programs from disk.

The cache lives in ``$XDG_CACHE_HOME/splat-sae-jax/jax`` (``~/.cache/...`` by default);
``JAX_COMPILATION_CACHE_DIR``, when set, wins (the test suite sets its own).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "splat-sae-jax" / "jax"


def use_persistent_cache() -> Path | None:
    """Turn the cache on (before the first compile); returns its folder, or None when it
    cannot be made (a read-only home: the command still runs, compiling as before)."""
    import jax

    folder = Path(os.environ.get(CACHE_ENV) or default_cache_dir())
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Every program is worth keeping: the command's small programs compile in well under
    # the default one-second floor, yet together they are most of a call's time.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return folder
