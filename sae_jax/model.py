"""The sparse autoencoder (docs/original.md §4) in Flax NNX.

``x_c = x - b_dec; pre = x_c @ W_enc + b_enc; h = clip(relu(pre), 0, clip_max);
recon = h @ unit_rows(W_dec) + b_dec``.

Layout (SAELens's): ``W_enc`` (d_in, d_sae), ``b_enc`` (d_sae,), ``W_dec``
(d_sae, d_in) whose rows are the dictionary atoms, ``b_dec`` (d_in,). Atoms are
normalised at use time (as the original does) and also kept at unit norm by the
optimiser's projection, so the stored and the used dictionary agree.

``usage_ema`` (d_sae,) is the running firing rate used for dead-feature
detection and the usage penalty; it is training state, not a parameter.

Architectures (:mod:`sae_jax.architectures`): the config's ``architecture`` names the
plugin that gives the encoder nonlinearity (relu_l1 above is the default) and the
parameters beside the four above (batchtopk and matryoshka SAEs hold a scalar
``threshold``, jumprelu ones a ``log_threshold (d_sae,)``). ``encode`` takes a float clip
(relu_l1), an SAEConfig or an EncoderSpec.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from runkit.jsonio import read_json, write_json
from sae_jax.architectures import Architecture, EncoderSpec, encoder_spec, get_architecture
from sae_jax.precision import matmul

ATOM_NORM_EPS = 1e-12


@dataclass(frozen=True)
class SAEConfig:
    input_dim: int = 512
    expansion_factor: float = 4.0
    clip_max: float = 6.0
    architecture: str = "relu_l1"
    k: int = 0  # features per row (topk); mean features per row (batchtopk, matryoshka)
    clip: bool = True  # clip the features at clip_max (relu_l1 always does)

    def __post_init__(self):
        if self.input_dim <= 0:
            raise ValueError(f"SAE input_dim must be positive, got {self.input_dim}")
        if not self.expansion_factor > 0:
            raise ValueError(f"SAE expansion_factor must be > 0, got {self.expansion_factor}")
        if self.hidden_dim <= 0:
            raise ValueError(
                f"SAE expansion_factor {self.expansion_factor} x input_dim {self.input_dim} "
                "gives no features"
            )
        self.arch.check_sae_config(self)

    @property
    def hidden_dim(self) -> int:
        return int(self.input_dim * self.expansion_factor)

    @property
    def arch(self) -> Architecture:
        """The architecture's plugin (:mod:`sae_jax.architectures`)."""
        return get_architecture(self.architecture, where="SAEConfig.architecture")

    @property
    def encoder(self) -> EncoderSpec:
        """The hashable spec ``encode`` needs (a static jit argument)."""
        return self.arch.encoder_spec(self)

    def param_names(self) -> tuple[str, ...]:
        return PARAM_KEYS + self.arch.param_names()

    def to_json(self, path: str | os.PathLike) -> None:
        d = dataclasses.asdict(self)
        if self == SAEConfig(self.input_dim, self.expansion_factor, self.clip_max):
            d = {k: d[k] for k in ("input_dim", "expansion_factor", "clip_max")}  # as before
        write_json(path, d)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> SAEConfig:
        return cls(**read_json(path, what="SAE config"))


class UsageEMA(nnx.Variable):
    """Running per-feature firing rate (not trained by the optimiser)."""


def unit_rows(w: jax.Array) -> jax.Array:
    """Each row scaled to unit L2 norm (zero rows stay zero)."""
    norm = jnp.sqrt(jnp.sum(w * w, axis=-1, keepdims=True))
    return w / jnp.maximum(norm, ATOM_NORM_EPS)


def _kaiming_uniform_relu(key, shape, fan_in, dtype=jnp.float32):
    bound = math.sqrt(2.0) * math.sqrt(3.0 / fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


# {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
# plus the architecture's extra parameters (SAEConfig.param_names()).
SAEParams = dict
PARAM_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec")


def pre_activations(params: SAEParams, x: jax.Array, *,
                    compute_dtype: str = "float32") -> jax.Array:
    """``(x - b_dec) @ W_enc + b_enc``: (..., d_in) -> (..., d_sae)."""
    x = x.astype(params["W_enc"].dtype)
    w = params["W_enc"]
    # Same as (x - b_dec) @ W_enc, but b_dec's gradient becomes a vector-matrix product
    # instead of a full (batch, d_in) x (d_in, d_sae) matmul in the backward pass.
    return matmul(x, w, compute_dtype) + (params["b_enc"] - params["b_dec"] @ w)


def encode(params: SAEParams, x: jax.Array, spec, *,
           compute_dtype: str = "float32") -> tuple[jax.Array, jax.Array]:
    """Pure encoder: ``(pre, post)`` from a params dict (used inside jitted loops).

    ``spec``: a float ``clip_max`` (the relu_l1 encoder clipped there), an
    :class:`SAEConfig` or an :class:`~sae_jax.architectures.EncoderSpec`; hashable, so it
    can be a static jit argument. ``compute_dtype`` is that of the big matmul
    (``sae_jax.precision``)."""
    pre = pre_activations(params, x, compute_dtype=compute_dtype)
    resolved = encoder_spec(spec)
    if resolved is None:  # a bare clip value: the relu_l1 encoder, exactly as it always was
        return pre, jnp.clip(jax.nn.relu(pre), 0.0, spec)
    return pre, get_architecture(resolved.architecture).activate(params, pre, resolved)


def decode(params: SAEParams, h: jax.Array, *, frozen_decoder: bool = False,
           compute_dtype: str = "float32", unit_atoms: bool = True) -> jax.Array:
    """Pure decoder through unit-norm atoms; ``frozen_decoder`` reproduces the original's
    no-grad dictionary (its decoder weight never learns); ``unit_atoms=False`` decodes
    through the rows as they are (training with free-norm rows, ``--decoder_init_norm``)."""
    atoms = unit_rows(params["W_dec"]) if unit_atoms else params["W_dec"]
    if frozen_decoder:
        atoms = jax.lax.stop_gradient(atoms)
    return matmul(h, atoms, compute_dtype) + params["b_dec"]


class SparseAutoencoder(nnx.Module):
    """Shapes: ``x: Float[Array, "... d_in"]``, features ``Float[Array, "... d_sae"]``."""

    def __init__(self, config: SAEConfig, *, rngs: nnx.Rngs):
        self.config = config
        d, h = config.input_dim, config.hidden_dim
        # kaiming-uniform (fan_in, relu) like the original, for both weights.
        self.W_enc = nnx.Param(_kaiming_uniform_relu(rngs.params(), (d, h), fan_in=d))
        self.b_enc = nnx.Param(jnp.zeros((h,)))
        self.W_dec = nnx.Param(unit_rows(_kaiming_uniform_relu(rngs.params(), (h, d), fan_in=h)))
        self.b_dec = nnx.Param(jnp.zeros((d,)))
        for name, kind in config.arch.extra_params:
            setattr(self, name, nnx.Param(jnp.zeros(() if kind == "scalar" else (h,))))
        self.usage_ema = UsageEMA(jnp.zeros((h,)))

    @property
    def hidden_dim(self) -> int:
        return self.config.hidden_dim

    def params(self) -> SAEParams:
        """The trainable parameters as a plain dict (the optimiser's pytree)."""
        return {k: getattr(self, k)[...] for k in self.config.param_names()}

    def set_params(self, params: SAEParams) -> None:
        for k in self.config.param_names():
            getattr(self, k)[...] = params[k]

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(pre, post)``: pre-activations and the feature activations (clipped ReLU for
        relu_l1; the architecture's inference encoder otherwise)."""
        return encode(self.params(), x, self.config.encoder)

    def atoms(self) -> jax.Array:
        """Unit-norm dictionary ``(d_sae, d_in)``."""
        return unit_rows(self.W_dec[...])

    def decode(self, h: jax.Array, *, frozen_decoder: bool = False) -> jax.Array:
        return decode(self.params(), h, frozen_decoder=frozen_decoder)

    def __call__(self, x: jax.Array, *, frozen_decoder: bool = False):
        """``(recon, post, pre)``."""
        pre, post = self.encode(x)
        return self.decode(post, frozen_decoder=frozen_decoder), post, pre


def create_sae(config: SAEConfig, seed: int = 0) -> SparseAutoencoder:
    return SparseAutoencoder(config, rngs=nnx.Rngs(seed))


def sae_from_params(config: SAEConfig, params: SAEParams, usage_ema=None) -> SparseAutoencoder:
    """An SAE module holding the given parameters (and usage EMA, zeros if None)."""
    sae = nnx.eval_shape(lambda: create_sae(config))
    missing = [k for k in config.param_names() if k not in params]
    if missing:
        raise ValueError(f"SAE parameters {missing} are missing for {config}")
    for k in config.param_names():
        expect = getattr(sae, k).shape
        got = tuple(params[k].shape)
        if got != tuple(expect):
            raise ValueError(f"SAE parameter {k} has shape {got}, expected {tuple(expect)} "
                             f"for {config}")
        setattr(sae, k, nnx.Param(jnp.asarray(params[k])))
    ema = jnp.zeros((config.hidden_dim,)) if usage_ema is None else jnp.asarray(usage_ema)
    sae.usage_ema = UsageEMA(ema)
    return sae
