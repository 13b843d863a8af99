"""The synthetic world of the SAELens peer benchmark, made by SAELens's own generator.

A :class:`WorldSpec` is a SynthSAEBench-style world for ``sae_lens.synthetic``: Zipfian
firing probabilities, a forest of feature hierarchies (children fire only with their
parent; some sibling groups mutually exclusive; probabilities compensated so each feature
keeps its base rate), a low-rank correlation between features, firing magnitudes around 1
and a dictionary bias. :func:`make_world` draws the training rows and a held-out
evaluation set from it once, saves them as ``.npy`` files beside the generator, and
returns them: both libraries train on the same training array and are scored on the same
evaluation rows (:class:`Replay` hands those rows to SAELens's evaluation in place of
fresh samples).

Imports torch and SAELens (benchmark-only dependencies, ``benchmarks/requirements.txt``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GENERATE_CHUNK = 65_536  # rows drawn per call: bounds the generator's temporary memory


@dataclass(frozen=True)
class WorldSpec:
    """The world's sizes and structure (module docstring). The defaults: 512 true features
    in 64 dimensions (8x superposition), about 6.4 features active per row."""

    num_features: int = 512
    hidden_dim: int = 64
    zipf_exponent: float = 0.7
    max_firing_probability: float = 0.4
    min_firing_probability: float = 0.003
    hierarchy_roots: int = 16
    branching: tuple[int, int] = (3, 5)
    hierarchy_depth: int = 2
    mutually_exclusive_portion: float = 0.15
    correlation_rank: int = 16
    correlation_scale: float = 0.1
    magnitude_std: float = 0.1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class World:
    """One drawn world: the generator and the arrays both libraries get."""

    spec: WorldSpec
    model: object  # sae_lens.synthetic.SyntheticModel
    train: np.ndarray  # (train_rows, hidden_dim) float32: the training activations
    eval_hidden: np.ndarray  # (eval_rows, hidden_dim) float32
    eval_features: np.ndarray  # (eval_rows, num_features) float32: the true activations
    directory: Path

    @property
    def true_features(self) -> np.ndarray:
        """``(num_features, hidden_dim)``: the true feature directions."""
        return self.model.feature_dict.feature_vectors.detach().numpy()


def synthetic_model_config(spec: WorldSpec, seed: int):
    """SAELens's ``SyntheticModelConfig`` of ``spec``."""
    from sae_lens.synthetic import (
        HierarchyConfig,
        LowRankCorrelationConfig,
        SyntheticModelConfig,
        ZipfianFiringProbabilityConfig,
    )

    return SyntheticModelConfig(
        num_features=spec.num_features,
        hidden_dim=spec.hidden_dim,
        firing_probability=ZipfianFiringProbabilityConfig(
            exponent=spec.zipf_exponent, max_prob=spec.max_firing_probability,
            min_prob=spec.min_firing_probability),
        hierarchy=HierarchyConfig(
            total_root_nodes=spec.hierarchy_roots, branching_factor=tuple(spec.branching),
            max_depth=spec.hierarchy_depth,
            mutually_exclusive_portion=spec.mutually_exclusive_portion,
            compensate_probabilities=True),
        correlation=LowRankCorrelationConfig(rank=spec.correlation_rank,
                                             correlation_scale=spec.correlation_scale,
                                             seed=seed),
        std_firing_magnitudes=spec.magnitude_std,
        seed=seed,
    )


def _draw(model, rows: int, *, with_features: bool):
    """``rows`` samples in chunks; ``(hidden, features or None)`` as float32 arrays."""
    hidden, features = [], []
    for start in range(0, rows, GENERATE_CHUNK):
        n = min(GENERATE_CHUNK, rows - start)
        if with_features:
            h, f = model.sample_with_features(n)
            features.append(f.numpy())
        else:
            h = model.sample(n)
        hidden.append(h.numpy())
    return (np.concatenate(hidden).astype(np.float32),
            np.concatenate(features).astype(np.float32) if with_features else None)


def make_world(spec: WorldSpec, seed: int, train_rows: int, eval_rows: int,
               directory: str | Path) -> World:
    """Build the generator (its structure seeded by ``seed``), draw ``train_rows`` training
    rows and then ``eval_rows`` held-out rows with their true feature activations (torch's
    global generator seeded by ``seed``), and save the generator and the arrays under
    ``directory``."""
    import torch
    from sae_lens.synthetic import SyntheticModel

    if train_rows <= 0 or eval_rows <= 0:
        raise ValueError(f"the world needs training and evaluation rows, got {train_rows} "
                         f"and {eval_rows}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = SyntheticModel(synthetic_model_config(spec, seed))
    torch.manual_seed(seed)
    train, _ = _draw(model, train_rows, with_features=False)
    eval_hidden, eval_features = _draw(model, eval_rows, with_features=True)
    model.save(directory / "generator")
    np.save(directory / "train.npy", train)
    np.save(directory / "eval_hidden.npy", eval_hidden)
    np.save(directory / "eval_features.npy", eval_features)
    return World(spec, model, train, eval_hidden, eval_features, directory)


def true_l0(world: World) -> float:
    """Mean number of true features active per evaluation row."""
    return float((world.eval_features > 0).sum(axis=1).mean())


class Replay:
    """Stands in for SAELens's activation generator in ``eval_sae_on_synthetic_data``:
    ``sample(n)`` returns the next ``n`` stored rows of true feature activations, so every
    SAE is scored on the same evaluation rows. :meth:`rewind` starts over."""

    def __init__(self, features: np.ndarray):
        self.features = features
        self.position = 0

    def rewind(self) -> Replay:
        self.position = 0
        return self

    def sample(self, n: int):
        import torch

        end = self.position + n
        if end > len(self.features):
            raise ValueError(f"the evaluation asked for rows {self.position}..{end - 1}; "
                             f"only {len(self.features)} are stored")
        rows = self.features[self.position:end]
        self.position = end
        return torch.from_numpy(rows)
