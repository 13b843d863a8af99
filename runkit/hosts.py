"""Several processes, one run: joining a ``jax.distributed`` run, and who writes files.

Every process runs the same program on its own share of each batch; process 0 alone
writes the run's files (configs, logs, models, reports), so that processes sharing a
filesystem never race. Checkpoints are the exception: orbax writes them collectively,
every process taking part (see :mod:`runkit.checkpoints`).
"""

from __future__ import annotations

import itertools
import os

import jax

COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"

# How long :func:`wait_for_all` waits: process 0 alone writes the run's report and runs the
# analysis after the others are done, which may take long on a big run.
WAIT_TIMEOUT_S = 6 * 3600
_barriers = itertools.count()


def initialize_multihost_from_env() -> bool:
    """Join a multi-process run when ``JAX_COORDINATOR_ADDRESS`` is set (BUILD.md).

    Must run before anything touches a device; ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` are passed on when set (clusters JAX knows detect them itself).
    On CPU the processes exchange data through JAX's default CPU collectives (gloo over
    TCP), which need no setting. ``python -m runkit.launch`` starts such a run locally.
    """
    address = os.environ.get(COORDINATOR_ENV)
    if not address:
        return False
    count, index = os.environ.get(NUM_PROCESSES_ENV), os.environ.get(PROCESS_ID_ENV)
    jax.distributed.initialize(coordinator_address=address,
                               num_processes=int(count) if count else None,
                               process_id=int(index) if index else None)
    return True


def is_writer() -> bool:
    """True in the one process that writes the run's files (process 0)."""
    return jax.process_index() == 0


def wait_for_all(name: str, *, timeout_s: float = WAIT_TIMEOUT_S) -> None:
    """Block until every process of the run has reached this call (no-op in one process).

    Used before a process leaves while process 0 still writes the run's files: JAX's exit
    barrier gives up after 5 minutes and then aborts every process. The wait is on the
    coordination service, not on the devices, so it costs nothing and it takes no part in
    orbax's collectives; a process that dies meanwhile is noticed by the service's
    heartbeat and the others stop with an error. Every process must make the same calls
    in the same order (``name`` labels them in errors).
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed  # the client orbax uses too; no public handle

    key = f"runkit_{next(_barriers)}_{name}"
    client = distributed.global_state.client
    if client is None:  # several processes without jax.distributed (a TPU pod's own runtime)
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(key)
        return
    client.wait_at_barrier(key, int(timeout_s * 1000))
