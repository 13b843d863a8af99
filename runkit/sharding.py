"""Data parallelism with ``jax.sharding``: one mesh axis, batch split, parameters replicated.

Every jitted step in the project takes replicated parameters and a batch whose
leading axis is split over the ``"data"`` mesh axis; XLA then inserts the
gradient all-reduce itself. The same helpers serve primary training, activation
harvesting and SAE training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: every device of every host)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device, got an empty list")
    return Mesh(np.asarray(devices, dtype=object), (DATA_AXIS,))


def num_data_shards(mesh: Mesh) -> int:
    return int(mesh.shape[DATA_AXIS])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``"data"``, every other axis whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def block_sharding(mesh: Mesh) -> NamedSharding:
    """``(C, B, ...)`` blocks of C batches: the batch-row axis split like a batch."""
    return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh (parameters, optimiser state)."""
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree, mesh: Mesh):
    """Place every array of a pytree on every device of ``mesh``.

    With several processes every process passes the same values; each array is then placed
    from a host copy, because ``jax.device_put`` of an array living on one local device onto
    a sharding that spans processes builds an array whose ``addressable_shards`` fail
    (jax 0.10), and orbax reads those when it saves a checkpoint."""
    sharding = replicated(mesh)
    if jax.process_count() > 1:
        return jax.tree.map(lambda x: _replicate_across_processes(x, sharding), tree)
    return jax.device_put(tree, sharding)


def _replicate_across_processes(x, sharding: NamedSharding):
    if not isinstance(x, jax.Array):
        return jax.device_put(np.asarray(x), sharding)
    if x.sharding.is_equivalent_to(sharding, x.ndim):
        return x
    if not (x.is_fully_addressable or x.is_fully_replicated):
        return jax.device_put(x, sharding)  # split over processes: a collective reshard
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = jax.device_put(np.asarray(jax.random.key_data(x)), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    return jax.device_put(np.asarray(x), sharding)


def check_batch_divisible(batch_size: int, shards: int, *, where: str = "batch") -> None:
    """Refuse a batch that cannot be split evenly over ``shards`` devices."""
    if batch_size <= 0:
        raise ValueError(f"{where}: empty batch (batch size {batch_size})")
    if batch_size % shards:
        raise ValueError(
            f"{where}: batch size {batch_size} is not divisible by the {shards} devices of the "
            f"data mesh; choose a batch size that is a multiple of {shards}"
        )


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh, *, where: str = "batch",
                per_process: bool | None = None) -> dict:
    """Host arrays ``{name: (B, ...)}`` -> device arrays with the batch axis split over the mesh.

    ``batch`` is always the GLOBAL batch: every process builds the same one (the data order
    is a pure function of the seed), so all arrays share the leading size ``B``, a multiple
    of the mesh's device count. One process places it with ``jax.device_put``; with several
    processes each one transfers only the rows its own devices hold
    (``jax.make_array_from_callback``). ``per_process`` forces that path (True) or the
    single-process one (False); default: by the number of processes.
    """
    if not batch:
        raise ValueError(f"{where}: empty batch dict")
    sizes = {name: np.shape(x)[0] if np.ndim(x) else None for name, x in batch.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(f"{where}: arrays disagree on the batch size (leading axis): {sizes}")
    check_batch_divisible(next(iter(sizes.values())), num_data_shards(mesh), where=where)
    sharding = batch_sharding(mesh)
    if per_process is None:
        per_process = jax.process_count() > 1
    if per_process:
        return {k: from_own_rows(np.asarray(v), sharding) for k, v in batch.items()}
    return {k: jax.device_put(np.asarray(v), sharding) for k, v in batch.items()}


def from_own_rows(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """The global array ``host`` under ``sharding``, built from the slices this process's
    devices hold (the other processes supply theirs; every process holds ``host`` whole)."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
