"""What both analyses (of a run on a primary model, :mod:`apps.analysis.pipeline`, and of a
run on activation files, :mod:`apps.analysis.activation_analysis`) compute alike: the SAE's
activations of the inputs in batches, the per-feature statistics and ranking, the report's
feature table, the run's held-out metrics, and the seconds of each stage."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from runkit.run_dir import RunDir
from sae_jax import feature_stats as analysis
from sae_jax.model import encode

BATCH_SIZE = 512
TOP_EXAMPLES = 8  # top activating builds shown per feature
HIST_BINS = 30


@partial(jax.jit, static_argnames=("clip_max",))
def _encode_jit(params, x, *, clip_max):
    return encode(params, x, clip_max)[1]


def sae_activations(sae, pooled: np.ndarray, *, batch_size: int = BATCH_SIZE):
    """Yield ``(h (B, F), valid (B,))`` batches of SAE activations of ``pooled``."""
    params, clip = sae.params(), sae.config.encoder  # the architecture-aware encoder spec
    n = len(pooled)
    size = min(batch_size, max(n, 1))
    for start in range(0, n, size):
        part = pooled[start:start + size]
        valid = np.zeros(size, bool)
        valid[: len(part)] = True
        if len(part) < size:
            part = np.concatenate([part, np.zeros((size - len(part), part.shape[1]), part.dtype)])
        yield _encode_jit(params, jnp.asarray(part), clip_max=clip), valid


class StageTimer:
    """Wall seconds of named stages, in order (``timer("name")`` as a context)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def feature_table(summary, ranked: np.ndarray) -> list[dict]:
    """Every feature's row of the report's table, by score (ties by id)."""
    in_window = set(ranked.tolist())
    return [{"id": int(f), "score": float(summary.score[f]),
             "frequency": float(summary.frequency[f]),
             "mean_when_active": float(summary.mean_when_active[f]),
             "max_act": float(summary.max_act[f]), "in_window": int(f) in in_window}
            for f in np.lexsort((np.arange(len(summary.score)), -summary.score))]


@dataclass(frozen=True)
class FeatureStatistics:
    """Per-feature statistics of the sparse activations (:func:`feature_statistics`)."""

    stats: object  # sae_jax.feature_stats's per-feature histograms and top rows
    summary: object
    ranked: np.ndarray  # features in report order
    hist_max: float
    edges: np.ndarray


def feature_statistics(sparse, clip_max: float) -> FeatureStatistics:
    """Histograms on :data:`HIST_BINS` log bins up to the largest activation (or
    ``clip_max``), the :data:`TOP_EXAMPLES` strongest rows, their summary and ranking."""
    hist_max = analysis.histogram_max(clip_max, sparse)
    edges = analysis.histogram_edges(HIST_BINS, hist_max)
    stats = analysis.stats_from_sparse(sparse, top_k=TOP_EXAMPLES, hist_edges=edges)
    summary = analysis.summarize(stats)
    return FeatureStatistics(stats, summary, analysis.rank_features(summary), hist_max, edges)


def training_metrics(workdir: Path) -> dict:
    """The held-out evaluation numbers of the run (``metrics.json``), if any."""
    metrics = RunDir(workdir).metrics()
    keys = ("fve", "mse", "l0", "dead_fraction", "dense_fraction", "loss_recovered",
            "kl_spliced", "logit_cosine", "top5_agreement", "shrinkage", "recon_cosine", "steps")
    return {k: metrics[k] for k in keys if isinstance(metrics.get(k), (int, float))}
