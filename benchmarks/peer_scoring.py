"""Both yardsticks for every SAE of the SAELens peer benchmark, on the same evaluation rows.

Every SAE, ours or SAELens's, is scored as a SAELens inference SAE read by SAELens's own
loader (``SAE.load_from_disk``): ours written by our SAELens export
(:func:`bridge.export_saelens.export_saelens`), SAELens's by its ``save_inference_model``
(its BatchTopK and Matryoshka SAEs become JumpReLU SAEs with the learned global
threshold, as SAELens saves them; ours export the same way). :func:`encoding_gap` checks on
a few rows that the loaded SAE gives the latents our own ``encode`` gives.

- SAELens's yardstick, :func:`saelens_scores`: ``eval_sae_on_synthetic_data`` on the stored
  evaluation rows (:class:`benchmarks.peer_world.Replay`): true and SAE L0, dead latents,
  shrinkage, explained variance, MCC (decoder against true directions, Hungarian matched),
  uniqueness, and each latent's precision, recall and F1 as a detector of the true feature
  its decoder row is closest to (firing = non-zero), averaged over latents.
- Ours, :func:`recovery_scores`: :mod:`sae_jax.concept_recovery` with every true feature
  a concept labelled "active on this row": the best single latent for it, thresholded at
  its best value, gives its F1; a true feature is recovered when that F1 reaches
  :data:`~sae_jax.concept_recovery.RECOVERED_F1` (0.8, the module's own criterion).
"""

from __future__ import annotations

import tempfile
import warnings

import jax.numpy as jnp
import numpy as np

from sae_jax.concept_recovery import RECOVERED_F1, sparse_best_f1_auroc
from sae_jax.model import encode, sae_from_params
from sae_jax.sparse_activations import collect

ENCODE_BATCH = 8192  # evaluation rows per encode call


def _load(directory: str):
    from sae_lens import SAE

    return SAE.load_from_disk(directory)


def inference_from_ours(trained):
    """Our trained SAE as a SAELens inference SAE, through our export and SAELens's
    loader."""
    from bridge.export_saelens import ClipWarning, export_saelens

    sae = sae_from_params(trained.sae_config, trained.params)
    with tempfile.TemporaryDirectory(prefix="peer_ours_") as d, warnings.catch_warnings():
        # relu_l1's clip is set out of reach (peer_recipes); clipped_fraction measures it.
        warnings.simplefilter("ignore", ClipWarning)
        export_saelens(sae, d)
        return _load(d)


def inference_from_theirs(training_sae):
    """SAELens's trained SAE as its inference SAE (saved and read back by SAELens)."""
    with tempfile.TemporaryDirectory(prefix="peer_saelens_") as d:
        training_sae.save_inference_model(d)
        return _load(d)


def torch_latents(sae, hidden: np.ndarray) -> np.ndarray:
    """``(n, d_sae)`` latents of a SAELens SAE on ``hidden (n, d_in)``."""
    import torch

    with torch.no_grad():
        return sae.encode(torch.from_numpy(np.ascontiguousarray(hidden))).numpy()


def our_latents(trained, hidden: np.ndarray) -> np.ndarray:
    """``(n, d_sae)`` latents of our trained SAE, by our own ``encode``."""
    _, post = encode(trained.params, jnp.asarray(hidden), trained.sae_config.encoder)
    return np.asarray(post)


def encoding_gap(trained, loaded, hidden: np.ndarray) -> dict:
    """How far the loaded SAELens SAE's latents are from ours on ``hidden``: the largest
    absolute difference, relative to the largest latent, and the share of entries where
    one fires and the other does not."""
    ours = our_latents(trained, hidden)
    theirs = torch_latents(loaded, hidden)
    scale = max(float(np.abs(ours).max()), 1e-12)
    return {"rows": len(hidden),
            "max_abs_diff_relative": float(np.abs(ours - theirs).max()) / scale,
            "firing_mismatch_fraction": float(np.mean((ours > 0) != (theirs > 0)))}


def clipped_fraction(trained, hidden: np.ndarray) -> float:
    """Share of our SAE's active latents on ``hidden`` that reach its clip (0 without
    one)."""
    clip = trained.sae_config.encoder.clip_max
    h = our_latents(trained, hidden)
    active = h > 0
    if clip is None or not active.any():
        return 0.0
    return float((active & (h >= clip)).sum() / active.sum())


def saelens_scores(loaded, world, num_rows: int) -> dict:
    """SAELens's synthetic evaluation of ``loaded`` on the first ``num_rows`` stored
    evaluation rows, flattened (``classification`` keys prefixed)."""
    from sae_lens.synthetic import eval_sae_on_synthetic_data

    from benchmarks.peer_world import Replay

    result = eval_sae_on_synthetic_data(
        loaded, world.model.feature_dict, Replay(world.eval_features), num_samples=num_rows,
        batch_size=min(ENCODE_BATCH, num_rows))
    raw = result.to_dict()
    out = {k: v for k, v in raw.items() if k != "classification"}
    out.update({f"latent_{k}": v for k, v in raw["classification"].items()})
    return out


def recovery_scores(latents: np.ndarray, labels: np.ndarray) -> dict:
    """Our concept-recovery scoring of ``latents (n, d_sae)`` (non-negative) against the
    true features' firing ``labels (n, num_features)`` bool."""
    sparse = collect([(latents, np.ones(len(latents), bool))], latents.shape[1]).sort_by_value()
    f1, _, auroc = sparse_best_f1_auroc(sparse, labels)
    best = f1.max(axis=0)  # per true feature: its best single latent
    return {"recovered": int((best >= RECOVERED_F1).sum()), "total": int(labels.shape[1]),
            "recovered_fraction": float(np.mean(best >= RECOVERED_F1)),
            "mean_best_f1": float(best.mean()),
            "mean_best_auroc": float(auroc.max(axis=0).mean()),
            "criterion_f1": RECOVERED_F1}


def score(loaded, world, num_rows: int) -> dict:
    """Both yardsticks for one loaded SAE (module docstring)."""
    hidden = world.eval_hidden[:num_rows]
    labels = world.eval_features[:num_rows] > 0
    return {"saelens": saelens_scores(loaded, world, num_rows),
            "recovery": recovery_scores(np.maximum(torch_latents(loaded, hidden), 0.0),
                                        labels)}
