"""SAE architectures as plugins: one module per architecture behind one protocol
(:class:`~sae_jax.architectures.base.Architecture`), and a registry of them.

``relu_l1`` (the original's): ``h = clip(relu(pre), 0, clip_max)``, trained with L1 and
the usage penalty (:mod:`sae_jax.losses`). The others (:mod:`.sparse_recipe`):

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

A new architecture is one module defining ``ARCHITECTURE`` (an instance of a subclass of
:class:`Architecture`) and one line in :mod:`.registry`.
"""

from sae_jax.architectures.base import (
    PARAM_KINDS,
    THRESHOLD_PARAMS,
    Architecture,
    EncoderSpec,
    encoder_spec,
)
from sae_jax.architectures.registry import ARCHITECTURES, check_architecture, get_architecture


def activate(params, pre, spec: EncoderSpec):
    """Inference features from pre-activations ``pre (..., F)`` under ``spec``."""
    return get_architecture(spec.architecture).activate(params, pre, spec)


__all__ = ["ARCHITECTURES", "PARAM_KINDS", "THRESHOLD_PARAMS", "Architecture", "EncoderSpec",
           "activate", "check_architecture", "encoder_spec", "get_architecture"]
