"""A run's builds and their train / val / test split, made again from its recorded settings.

Every command that needs a run's data (primary and SAE training, the SAE's evaluation
and analysis, the workbench, ``primary.eval_completion``) calls :func:`data_splits`, so
the held-out builds are the same builds wherever they are made: the builds of the source
(drawn with ``seed``), cut 70/10/20 by build with the same ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from primary.builds import BuildSet


@dataclass(frozen=True)
class DataSplits:
    """The run's ``builds`` and the index arrays of its train, val and test parts."""

    builds: BuildSet
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def num_builds(self) -> int:
        return len(self.builds)

    def train_builds(self) -> BuildSet:
        return self.builds.subset(self.train)

    def test_builds(self, limit: int | None = None) -> BuildSet:
        """The held-out builds, the first ``limit`` of them when given."""
        return self.builds.subset(self.test if limit is None else self.test[:limit])


def data_splits(data_source: str, *, data_path: str = "", num_builds: int, seed: int,
                vocab=None, weapon_vocab=None, concepts=None) -> DataSplits:
    """The builds of ``data_source`` (:func:`primary.sources.load_builds`: ``data_path``,
    ``num_builds``, ``seed``, the vocabularies and the planted ``concepts``) split by
    build with ``seed`` (:func:`primary.examples.split_builds`)."""
    from primary.examples import split_builds
    from primary.sources import load_builds

    builds = load_builds(data_source, path=data_path, num_builds=num_builds, seed=seed,
                         vocab=vocab, weapon_vocab=weapon_vocab, concepts=concepts)
    return DataSplits(builds, *split_builds(len(builds), seed))
