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


def initialize_multihost_from_env() -> bool:
    """Join a multi-process run when ``JAX_COORDINATOR_ADDRESS`` is set (BUILD.md).

    Must run before anything touches a device; ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` are passed on when set (clusters JAX knows detect them itself).
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
