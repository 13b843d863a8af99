"""SAE architectures: the encoder nonlinearity a saved SAE applies, as a hashable spec.

``relu_l1`` (the original's): ``h = clip(relu(pre), 0, clip_max)``, trained with L1 and
the usage penalty (:mod:`sae_jax.losses`). The others (trained by :mod:`sae_jax.recipes`):

- ``topk`` (Gao et al. 2024): per row, the ``k`` largest pre-activations, ReLU'd; the
  rest zero. Training and inference agree.
- ``batchtopk`` (Bussmann et al. 2024): in training, the ``k x batch`` largest
  pre-activations of the whole batch (ReLU'd); at inference, a JumpReLU with one global
  threshold ``params["threshold"]`` (a scalar estimated during training), so a row's
  encoding does not depend on the rest of its batch.
- ``matryoshka`` (Bussmann et al. 2025): BatchTopK with nested prefix losses; it
  encodes like ``batchtopk``.
- ``jumprelu`` (Rajamanoharan et al. 2024): ``h = pre * [pre > theta]`` with a learned
  per-feature threshold ``theta = exp(params["log_threshold"])``.

``clip_max`` in an :class:`EncoderSpec` is the upper clip of the features (always set
for relu_l1, optional for the others). The pure ``encode`` of :mod:`sae_jax.model` takes a
spec, an :class:`~sae_jax.model.SAEConfig`, or a bare float (relu_l1 with that clip).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from sae_jax.kth_largest import kth_largest, kth_largest_per_row

ARCHITECTURES = ("relu_l1", "topk", "batchtopk", "jumprelu", "matryoshka")
# Architectures that select k features and use the AuxK loss instead of resampling.
TOPK_FAMILY = ("topk", "batchtopk", "matryoshka")
# Architectures that encode with one global threshold at inference.
GLOBAL_THRESHOLD = ("batchtopk", "matryoshka")

# Extra parameters, beside W_enc, b_enc, W_dec, b_dec, by architecture; name -> shape kind
# ("scalar" or "features").
EXTRA_PARAMS = {
    "batchtopk": {"threshold": "scalar"},
    "matryoshka": {"threshold": "scalar"},
    "jumprelu": {"log_threshold": "features"},
}
# Parameters that hold thresholds: no weight decay; the global one is set, not learned.
THRESHOLD_PARAMS = ("threshold", "log_threshold")


def check_architecture(name: str, *, where: str = "--architecture") -> None:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown SAE architecture {name!r} ({where}); choose one of "
                         f"{ARCHITECTURES}")


@dataclass(frozen=True)
class EncoderSpec:
    """What ``encode`` needs besides the params: hashable, so it can be a static jit
    argument. ``k`` is used by ``topk`` only (the others encode without it)."""

    architecture: str = "relu_l1"
    k: int = 0
    clip_max: float | None = 6.0

    def __post_init__(self):
        check_architecture(self.architecture, where="EncoderSpec.architecture")
        if self.architecture == "topk" and self.k <= 0:
            raise ValueError(f"a topk encoder needs k >= 1, got k={self.k}")
        if self.architecture == "relu_l1" and self.clip_max is None:
            raise ValueError("a relu_l1 encoder always clips: clip_max must be set")
        if self.clip_max is not None and not self.clip_max > 0:
            raise ValueError(f"clip_max must be > 0 (or None: no clip), got {self.clip_max}")


def encoder_spec(spec) -> EncoderSpec | None:
    """An :class:`EncoderSpec` from a spec or anything with an ``encoder`` spec property
    (an SAEConfig); None for a bare clip value (the relu_l1 encoder clipped there)."""
    if isinstance(spec, EncoderSpec):
        return spec
    inner = getattr(spec, "encoder", None)
    if isinstance(inner, EncoderSpec):
        return inner
    return None


def topk_mask(pre: jax.Array, k: int) -> jax.Array:
    """Per row, True at the ``k`` largest entries of ``pre (..., F)`` (ties at the k-th
    value all kept, which real-valued pre-activations almost never have)."""
    return pre >= kth_largest_per_row(pre, k)[..., None]


def batch_topk_mask(pre: jax.Array, k: int) -> jax.Array:
    """True at the ``k x rows`` largest positive entries of ``pre (rows, F)`` over the
    whole batch (fewer when fewer are positive)."""
    flat = jax.nn.relu(pre).reshape(-1)
    n = min(k * pre.shape[0], flat.shape[0])
    kth = kth_largest(flat, n)
    return (pre >= kth) & (pre > 0)


def jumprelu_threshold(params) -> jax.Array:
    """``theta (F,)`` of a jumprelu SAE."""
    return jnp.exp(params["log_threshold"])


def log_threshold_init(value: float) -> float:
    if not value > 0:
        raise ValueError(f"the JumpReLU initial threshold must be > 0, got {value}")
    return math.log(value)


def activate(params, pre: jax.Array, spec: EncoderSpec) -> jax.Array:
    """Inference features from pre-activations ``pre (..., F)`` under ``spec``."""
    arch = spec.architecture
    if arch == "relu_l1":
        return jnp.clip(jax.nn.relu(pre), 0.0, spec.clip_max)
    if arch == "topk":
        post = jnp.where(topk_mask(pre, spec.k), jax.nn.relu(pre), 0.0)
    elif arch in GLOBAL_THRESHOLD:
        post = jnp.where(pre > params["threshold"], jax.nn.relu(pre), 0.0)
    else:  # jumprelu
        post = jnp.where(pre > jumprelu_threshold(params), pre, 0.0)
    return post if spec.clip_max is None else jnp.minimum(post, spec.clip_max)
