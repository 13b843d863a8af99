"""Harvesting a block of primary batches at once, its rows grouped by length.

The SAE loop harvests ``C`` primary batches of ``B`` rows together (a block).
On the host, :func:`host_block` takes the block's rows in the loop's data order,
sets aside the lone ``[<NULL>]`` inputs (their pooled vector depends only on the
weapon: :func:`null_pooled_table` computes it once per weapon), and cuts the
other rows, sorted by length, into groups of ``group_rows``, each padded only to
the width its longest row needs (:func:`primary.examples.length_groups`). On the
device, :func:`harvest_block` runs one jitted forward per group (compiled once per
width) and scatters the pooled vectors into the block's ``(C, B, d)`` staging
array at their batch and row. Padding rows of the last group are sent out of
range and dropped.

Blocks start at multiples of ``C`` in the run's global batch index, so the rows
that share a group are a pure function of the data order: a resumed run
harvests every row exactly as an uninterrupted one did.

A run that passes over the same examples several times (epochs) need not harvest
them again: the frozen primary gives an example the same pooled vector every time.
Where every example's vector fits in as many rows as the activation buffer holds,
:func:`harvest_every_example` harvests each example once, up front, and
:func:`gather_block` fills each block's staging array from that table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bridge.harvest import pooled_of_inputs, pooled_vectors
from primary.examples import Examples, epoch_order, length_groups, model_rows, null_rows
from runkit.prefetch import made_ahead
from runkit.sharding import (
    DATA_AXIS,
    block_sharding,
    from_own_rows,
    num_data_shards,
    replicate,
)

# Rows per block and per harvest group: large enough that an accelerator is not
# dispatch-bound, small enough that a block is harvested in seconds on a CPU.
BLOCK_ROWS = 4096
GROUP_ROWS = 128


@dataclass(frozen=True)
class BlockLayout:
    """``batches`` primary batches of ``batch_size`` rows per block; harvest groups of
    ``group_rows`` rows (a multiple of the batch size, so it splits over the devices as
    evenly as a batch does)."""

    batches: int
    batch_size: int
    group_rows: int

    @classmethod
    def for_batch_size(cls, batch_size: int, *, block_rows: int = BLOCK_ROWS,
                       group_rows: int = GROUP_ROWS) -> BlockLayout:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        batches = max(1, block_rows // batch_size)
        # At least four groups per block where it has four batches: one group would pad
        # every row to the block's longest.
        per_group = max(1, min(group_rows // batch_size, batches // 4))
        return cls(batches, batch_size, batch_size * per_group)

    @property
    def rows(self) -> int:
        return self.batches * self.batch_size


@dataclass(frozen=True)
class HostBlock:
    """One block's inputs on the host. ``groups``: ``(width, arrays)`` with ``tokens``,
    ``weapons``, ``key_padding_mask`` and ``positions`` (flat ``batch * B + row`` in the
    block; ``layout.rows`` for padding rows), ``group_rows`` rows each; ``is_null``,
    ``weapons`` and ``examples`` (the example index of each row, 0 past the block's
    batches): ``(C, B)``."""

    first_batch: int
    num_batches: int
    groups: list[tuple[int, dict[str, np.ndarray]]]
    is_null: np.ndarray
    weapons: np.ndarray
    examples: np.ndarray


def block_example_indices(examples: Examples, *, seed: int, batch_size: int,
                          batches_per_epoch: int, first_batch: int, num_batches: int,
                          orders: dict | None = None) -> np.ndarray:
    """``(num_batches, batch_size)`` example indices of global batches ``first_batch...``:
    epoch ``g // batches_per_epoch``, batch ``g % batches_per_epoch`` of that epoch's order
    (as :func:`primary.examples.iterate_batches` takes them). ``orders`` caches the orders."""
    orders = {} if orders is None else orders
    out = np.empty((num_batches, batch_size), np.int64)
    for i, g in enumerate(range(first_batch, first_batch + num_batches)):
        epoch, b = divmod(g, batches_per_epoch)
        if epoch not in orders:
            orders.clear()  # one epoch at a time is enough
            orders[epoch] = epoch_order(examples, seed=seed, epoch=epoch)
        idx = orders[epoch][b * batch_size:(b + 1) * batch_size]
        if len(idx) != batch_size:
            raise ValueError(f"batch {b} of epoch {epoch} is short ({len(idx)} of {batch_size} "
                             f"rows): batches_per_epoch {batches_per_epoch} is too many")
        out[i] = idx
    return out


def host_block(examples: Examples, layout: BlockLayout, indices: np.ndarray,
               first_batch: int, *, with_groups: bool = True) -> HostBlock:
    """The block of the example ``indices`` ``(n, B)`` (n <= C batches); without its
    harvest groups where the vectors come from :func:`harvest_every_example`'s table."""
    n, b = indices.shape
    if n > layout.batches or b != layout.batch_size:
        raise ValueError(f"a block of {n} batches of {b} rows does not fit the layout "
                         f"{layout}")
    flat = indices.reshape(-1)
    is_null = np.zeros(layout.rows, bool)
    is_null[:len(flat)] = null_rows(examples, flat)
    weapons = np.zeros(layout.rows, np.int32)
    weapons[:len(flat)] = examples.weapons[flat, 0]
    rows = np.zeros(layout.rows, np.int32)
    rows[:len(flat)] = flat
    harvested = np.flatnonzero(~is_null[:len(flat)])
    groups = (_length_groups(examples, flat, harvested, layout.group_rows, layout.rows)
              if with_groups else [])
    return HostBlock(first_batch, n, groups, is_null.reshape(layout.batches, b),
                     weapons.reshape(layout.batches, b), rows.reshape(layout.batches, b))


def _length_groups(examples: Examples, flat: np.ndarray, harvested: np.ndarray,
                   group_rows: int, out_of_range: int) -> list[tuple[int, dict]]:
    """The model inputs of examples ``flat[harvested]`` in groups of ``group_rows`` rows of
    similar length, each with the ``positions`` (into ``flat``) its pooled vectors go to;
    a short last group is filled with copies of a real row sent to ``out_of_range``."""
    groups = []
    for width, pos in length_groups(examples.lengths[flat[harvested]], group_rows):
        positions = harvested[pos]
        short = group_rows - len(positions)
        arrays = model_rows(examples, flat[np.concatenate([positions, np.repeat(
            positions[:1], short)])], width)  # padding rows repeat a real one
        arrays["positions"] = np.concatenate(
            [positions, np.full(short, out_of_range)]).astype(np.int32)
        groups.append((width, arrays))
    return groups


@dataclass(frozen=True)
class DeviceBlock:
    first_batch: int
    num_batches: int
    groups: list[tuple[int, dict[str, jax.Array]]]
    is_null: jax.Array
    weapons: jax.Array
    examples: jax.Array


def _place_groups(groups: list[tuple[int, dict]], mesh: Mesh) -> list[tuple[int, dict]]:
    rows = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return [(w, {k: from_own_rows(np.asarray(v), rows) for k, v in arrays.items()})
            for w, arrays in groups]


def to_device(block: HostBlock, mesh: Mesh) -> DeviceBlock:
    sharding = block_sharding(mesh)
    return DeviceBlock(block.first_batch, block.num_batches, _place_groups(block.groups, mesh),
                       from_own_rows(block.is_null, sharding),
                       from_own_rows(block.weapons, sharding),
                       from_own_rows(block.examples, sharding))


def create_staging(layout: BlockLayout, dim: int, mesh: Mesh, dtype="float32") -> jax.Array:
    """The block's ``(C, B, dim)`` pooled vectors, zeros, split like the batches."""
    shape = (layout.batches, layout.batch_size, dim)
    if layout.batch_size % num_data_shards(mesh):
        raise ValueError(f"batch size {layout.batch_size} does not split over the "
                         f"{num_data_shards(mesh)} devices")
    return jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=block_sharding(mesh))()


def _harvest_group(graphdef, primary_state, staging: jax.Array, group: dict) -> jax.Array:
    x = pooled_vectors(graphdef, primary_state, group)
    batch_size = staging.shape[1]
    pos = group["positions"]
    # Out-of-range positions (padding rows) land past the last batch and are dropped.
    return staging.at[pos // batch_size, pos % batch_size].set(
        x.astype(staging.dtype), mode="drop")


@lru_cache(maxsize=16)
def make_group_harvest_fn(graphdef: nnx.GraphDef):
    """``fn(primary_state, staging, group) -> staging``: one group's pooled vectors
    scattered into the staging array (donated); compiles once per group width."""
    return jax.jit(partial(_harvest_group, graphdef), donate_argnums=(1,))


def harvest_block(graphdef: nnx.GraphDef, primary_state, block: DeviceBlock,
                  staging: jax.Array) -> jax.Array:
    """Every group of ``block`` through the frozen primary into ``staging`` (donated);
    asynchronous: nothing waits for the device."""
    fn = make_group_harvest_fn(graphdef)
    for _, group in block.groups:
        staging = fn(primary_state, staging, group)
    return staging


def fits_example_table(examples: Examples, buffer_rows: int) -> bool:
    """Whether :func:`harvest_every_example`'s table is worth keeping: no more rows than the
    activation buffer already holds (so it at most doubles the loop's device memory), in a
    single process (each process would need the whole table)."""
    return len(examples) <= buffer_rows and jax.process_count() == 1


def harvest_every_example(graphdef: nnx.GraphDef, primary_state, examples: Examples,
                          layout: BlockLayout, mesh: Mesh, dim: int) -> jax.Array:
    """``(ceil(n / B), B, d)``: every example's pooled vector at flat position = its index,
    harvested once in groups of similar length; the lone ``[<NULL>]`` inputs' rows stay
    zero (the loop takes those from :func:`null_pooled_table`)."""
    n, b = len(examples), layout.batch_size
    batches = -(-n // b)
    table = create_staging(BlockLayout(batches, b, layout.group_rows), dim, mesh)
    every = np.arange(n)
    harvested = np.flatnonzero(~null_rows(examples, every))
    fn = make_group_harvest_fn(graphdef)
    for _, group in _place_groups(_length_groups(examples, every, harvested,
                                                 layout.group_rows, batches * b), mesh):
        table = fn(primary_state, table, group)
    return table


@jax.jit
def gather_block(table: jax.Array, examples: jax.Array) -> jax.Array:
    """``(C, B, d)``: the pooled vectors of a block's ``examples`` ``(C, B)`` read from
    :func:`harvest_every_example`'s table, what :func:`harvest_block` would compute
    without the forward passes."""
    return table.reshape(-1, table.shape[-1])[examples]


def device_blocks(examples: Examples, layout: BlockLayout, mesh: Mesh, *, seed: int,
                  batches_per_epoch: int, total_batches: int, first_batch: int,
                  with_groups: bool = True) -> Iterator[DeviceBlock]:
    """The blocks holding global batches ``first_batch`` to ``total_batches - 1``, in order,
    placed on the devices. Each is built on the host in a worker thread while the caller
    uses the one before, so the device never waits for the host. Closing the iterator early
    waits for the block being built."""
    orders: dict = {}

    def build(first: int) -> DeviceBlock:
        end = min(first + layout.batches, total_batches)
        indices = block_example_indices(examples, seed=seed, batch_size=layout.batch_size,
                                        batches_per_epoch=batches_per_epoch, first_batch=first,
                                        num_batches=end - first, orders=orders)
        return to_device(host_block(examples, layout, indices, first,
                                    with_groups=with_groups), mesh)

    starts = (range(first_batch - first_batch % layout.batches, total_batches, layout.batches)
              if first_batch < total_batches else range(0))
    return made_ahead(build, starts)


def null_pooled_table(primary, null_id: int, mesh: Mesh) -> jax.Array:
    """``(weapon_vocab_size, hidden)``: the pooled vector of the input ``[<NULL>]`` with each
    weapon, replicated on the mesh."""
    n = primary.config.weapon_vocab_size
    inputs = {"tokens": np.full((n, 1), null_id, np.int32),
              "weapons": np.arange(n, dtype=np.int32)[:, None],
              "key_padding_mask": np.zeros((n, 1), bool)}
    return replicate(jnp.asarray(pooled_of_inputs(primary, inputs)), mesh)
