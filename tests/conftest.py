"""Test setup: CPU only, with 4 forced host devices so sharding can be tested, XLA's CPU
optimisation level 0, and one compilation cache for the session.

These must be set before JAX is first imported.
"""

import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA's CPU backend at optimisation level 0: the suite's programs are tiny and mostly
# compiled once, so LLVM's optimisation passes cost more than they save (measured on two
# of the heaviest files: a quarter less CPU time). The programs compute the same things;
# benchmarks, which time them, run at the default level.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=4").strip()

# Compiling is about half of the suite's time, and many tests compile the same programs
# (the same tiny models and steps, built anew per test, in the pytest workers and in the
# runs the tests start as subprocesses). A compilation cache in a fresh directory per
# session, inherited through the environment by the workers and subprocesses, compiles
# each program once (measured: 12.4 and 12.8 against 14.3 minutes for the suite). Nothing
# carries over between sessions; a cache directory set by the caller is used as it is.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="splat-sae-jax-test-compile-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


def pytest_unconfigure(config):
    """The process that made the session's cache removes it (the workers inherit it)."""
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
