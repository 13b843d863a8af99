"""Several processes, one run: joining a ``jax.distributed`` run, and who writes files.

Every process runs the same program on its own share of each batch; process 0 alone
writes the run's files (configs, logs, models, reports), so that processes sharing a
filesystem never race. Checkpoints are the exception: orbax writes them collectively,
every process taking part (see :mod:`runkit.checkpoints`).
"""

from __future__ import annotations

import os

import jax

COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"

# How long a process that has finished waits at exit for the others (jax.distributed's
# shutdown barrier). Process 0 alone writes the run's report and runs the analysis after
# the others are done, which can take far longer than JAX's default of 300 s; a timeout
# here aborts every process. A process that dies is still noticed by the heartbeat.
SHUTDOWN_TIMEOUT_S = 6 * 3600


def initialize_multihost_from_env() -> bool:
    """Join a multi-process run when ``JAX_COORDINATOR_ADDRESS`` is set (BUILD.md).

    Must run before anything touches a device; ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` are passed on when set (clusters JAX knows detect them itself).
    On CPU the processes exchange data through JAX's default CPU collectives (gloo over
    TCP), which need no setting. ``python -m sae_jax.launch`` starts such a run locally.
    """
    address = os.environ.get(COORDINATOR_ENV)
    if not address:
        return False
    count, index = os.environ.get(NUM_PROCESSES_ENV), os.environ.get(PROCESS_ID_ENV)
    jax.distributed.initialize(coordinator_address=address,
                               num_processes=int(count) if count else None,
                               process_id=int(index) if index else None,
                               shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)
    return True


def is_writer() -> bool:
    """True in the one process that writes the run's files (process 0)."""
    return jax.process_index() == 0
