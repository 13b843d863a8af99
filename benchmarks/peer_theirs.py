"""SAELens's side of the peer benchmark: SAEs trained by SAELens's own trainer on the
world's training array, one at a time (``SAETrainer``, what ``SyntheticSAERunner`` and
``train_toy_sae`` drive) and all members together (``MultiSAETrainer``: the coordinator
that ``MultiSAETrainingRunner`` drives; the runner itself wants a language model and its
hooks, so the benchmark drives the coordinator with the same array as one hook).

Batches come from :class:`ArrayBatches`: the array in shuffled passes, the natural way to
feed a fixed array to a trainer that takes an iterator. Wall times are end to end:
building the SAE and every step, until ``fit`` returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

HOOK = "synthetic"  # the one hook name MultiSAETrainer routes the array to


@dataclass
class Trained:
    """One SAE trained by SAELens and what its training cost."""

    sae: object  # sae_lens TrainingSAE
    wall_s: float  # end to end (shared by every member of a multi-SAE run)
    steps: int


class ArrayBatches:
    """An endless iterator of ``batch``-row torch tensors from ``array``, in passes each
    shuffled by a generator seeded with ``seed``."""

    def __init__(self, array: np.ndarray, batch: int, seed: int):
        import torch

        if batch > len(array):
            raise ValueError(f"a batch of {batch} rows from an array of {len(array)}")
        self.array = torch.from_numpy(np.ascontiguousarray(array, np.float32))
        self.batch = batch
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(array), generator=self.generator)
        self.position = 0

    def __iter__(self):
        return self

    def __next__(self):
        import torch

        if self.position + self.batch > len(self.order):
            self.order = torch.randperm(len(self.array), generator=self.generator)
            self.position = 0
        rows = self.order[self.position:self.position + self.batch]
        self.position += self.batch
        return self.array[rows]


def _training_sae(sae_config, seed: int):
    """A fresh training SAE of ``sae_config``'s architecture, initialised under ``seed``."""
    import torch
    from sae_lens.registry import get_sae_training_class

    sae_class, _ = get_sae_training_class(sae_config.architecture())
    torch.manual_seed(seed)
    return sae_class(sae_config)


def train_single(sae_config, trainer_config, train: np.ndarray, seed: int) -> Trained:
    """Train one SAE with SAELens's ``SAETrainer`` (initialisation and batch order seeded
    by ``seed``)."""
    from sae_lens.training.sae_trainer import SAETrainer

    t0 = time.perf_counter()
    sae = _training_sae(sae_config, seed)
    trainer = SAETrainer(cfg=trainer_config, sae=sae,
                         data_provider=ArrayBatches(train, trainer_config.train_batch_size_samples,
                                                    seed))
    trainer.fit()
    return Trained(sae, time.perf_counter() - t0, trainer.n_training_steps)


def train_multi(members: list[tuple[str, object, int]], trainer_config, train: np.ndarray,
                batch_seed: int) -> tuple[list[Trained], float]:
    """Train ``members`` (``(name, sae_config, seed)``) together with SAELens's
    ``MultiSAETrainer``: every step, each SAE steps on the same batch. Returns the
    members in order and the run's wall time."""
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    t0 = time.perf_counter()
    saes = {name: _training_sae(cfg, seed) for name, cfg, seed in members}
    batches = ArrayBatches(train, trainer_config.train_batch_size_samples, batch_seed)
    trainer = MultiSAETrainer(cfg=trainer_config, saes=saes,
                              hook_names=dict.fromkeys(saes, HOOK),
                              data_provider=({HOOK: b} for b in batches))
    trainer.fit()
    wall = time.perf_counter() - t0
    return [Trained(saes[name], wall, trainer.n_training_steps) for name, _, _ in members], wall
