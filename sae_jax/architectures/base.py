"""The protocol every SAE architecture implements, and the encoder spec it reads.

An architecture is a frozen dataclass instance (one per module, :mod:`.registry`), so it
is hashable and can be looked up inside jitted code from the config's ``architecture``
name, which stays the static jit argument. What it decides:

- its parameters beside ``W_enc, b_enc, W_dec, b_dec`` (:attr:`extra_params`) and their
  initialisation for training (:meth:`init_params`);
- the inference encoder (:meth:`activate` under an :class:`EncoderSpec`);
- the training loss and the state a step carries (:meth:`loss`, :meth:`init_extra`,
  :meth:`apply_state_updates`) and the metrics it logs (:meth:`metric_names`);
- the validation of its settings (:meth:`settings_errors`, :meth:`check_sae_config`,
  :meth:`check_encoder`) and how its settings make an SAE config (:meth:`sae_config`);
- dead features: AuxK (:attr:`uses_auxk`) or resampling, and what resampling resets
  (:meth:`resampled_params`);
- its SAELens export (:attr:`saelens_architecture`, :meth:`export_tensors`,
  :meth:`export_fields`, :meth:`import_params`), SAELens's name for training the same
  recipe (:meth:`saelens_training_name`) and what a run's ``metrics.json`` records of it
  (:meth:`summary_fields`);
- which logged metrics its training curves draw (:meth:`curve_metrics`, :meth:`dead_metric`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import jax
import jax.numpy as jnp

# Parameters that hold thresholds: no weight decay; a global one is set, not learned.
THRESHOLD_PARAMS = ("threshold", "log_threshold")
# Shape kinds of extra parameters: a scalar, or one value per feature.
PARAM_KINDS = ("scalar", "features")


@dataclass(frozen=True)
class EncoderSpec:
    """What ``encode`` needs besides the params: hashable, so it can be a static jit
    argument. ``k`` is read by architectures that encode with it (topk); ``clip_max`` is
    the upper clip of the features (None: no clip)."""

    architecture: str = "relu_l1"
    k: int = 0
    clip_max: float | None = 6.0

    def __post_init__(self):
        from sae_jax.architectures.registry import get_architecture

        get_architecture(self.architecture, where="EncoderSpec.architecture").check_encoder(self)
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


def clipped(post: jax.Array, spec: EncoderSpec) -> jax.Array:
    """``post`` clipped at ``spec.clip_max`` where the spec has a clip."""
    return post if spec.clip_max is None else jnp.minimum(post, spec.clip_max)


def groups_not_applicable(name: str, cfg) -> list[str]:
    """The refusal of ``--matryoshka_groups`` for an architecture without groups."""
    if cfg.matryoshka_groups:
        return [f"--matryoshka_groups is for --architecture=matryoshka; "
                f"--architecture is {name!r}"]
    return []


def resampling_dead_metric(cfg) -> tuple[str, str]:
    """The dead count of the architectures that resample: the usage EMA's test."""
    return ("dead_count", f"features with firing-rate EMA < {cfg.dead_threshold:g}\n"
                          f"(h > 0, decay {cfg.usage_ema_decay:g}; resampling's test)")


@dataclass(frozen=True)
class Architecture(abc.ABC):
    """One SAE architecture (module docstring). Subclasses set the class attributes and
    implement every abstract method, and are ``@dataclass(frozen=True)`` themselves (a
    frozen base does not freeze a subclass); ``cfg`` is an
    :class:`~sae_jax.config.SAETrainConfig`, ``config`` an :class:`~sae_jax.model.SAEConfig`."""

    # Our name (``--architecture``), the name people read, and SAELens's name for the same
    # encoder.
    name = ""
    display_name = ""
    saelens_architecture = ""
    # SAELens's name for the same training recipe where it differs from the encoder's
    # (BatchTopK trains as "batchtopk" and is saved as a "jumprelu"); "" when the same.
    saelens_training_architecture = ""
    # Extra parameters: ((name, kind), ...) with kind in PARAM_KINDS. (Class attributes
    # without annotations: the dataclass has no fields, every instance is the same value.)
    extra_params = ()
    # Dead features get the AuxK loss (True) or are resampled (False).
    uses_auxk = False
    # Whether an SAE trained with decoder rows free in norm (--decoder_init_norm) can be
    # folded back to unit rows exactly (fold_decoder_norms).
    folds_decoder_norms = False
    # AdamW skips the threshold parameters' weight decay (False: plain AdamW, whose
    # optimiser state has no mask: the original's).
    masked_weight_decay = True
    # The dynamic setting that weights the sparsity penalty, if any (a sweep's axis).
    penalty_setting = None

    def saelens_training_name(self) -> str:
        """SAELens's architecture name for training this recipe (its training class)."""
        return self.saelens_training_architecture or self.saelens_architecture

    def param_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.extra_params)

    def required_settings(self, d_sae: int) -> dict:
        """Settings whose defaults this architecture cannot train with, chosen for an SAE
        of ``d_sae`` features (for code that names only the architecture: benchmarks)."""
        return {}

    # ------------------------------------------------------------ settings

    @abc.abstractmethod
    def settings_errors(self, cfg, check, d_sae: int | None) -> list[str]:
        """Errors in ``cfg``'s architecture settings, each naming its flag. ``check(name,
        ok, message)`` records an error about one setting (``--name message, got v``);
        ``d_sae``: the number of features, when known."""

    @abc.abstractmethod
    def sae_config(self, cfg, input_dim: int):
        """The :class:`~sae_jax.model.SAEConfig` that ``cfg`` trains."""

    @abc.abstractmethod
    def check_sae_config(self, config) -> None:
        """Raise ValueError when an SAEConfig cannot be of this architecture."""

    @abc.abstractmethod
    def encoder_spec(self, config) -> EncoderSpec:
        """The inference encoder's spec of an SAEConfig."""

    @abc.abstractmethod
    def check_encoder(self, spec: EncoderSpec) -> None:
        """Raise ValueError when ``spec`` cannot encode for this architecture."""

    # ------------------------------------------------------------ inference

    @abc.abstractmethod
    def activate(self, params, pre: jax.Array, spec: EncoderSpec) -> jax.Array:
        """Inference features from pre-activations ``pre (..., F)``."""

    # ------------------------------------------------------------ training

    @abc.abstractmethod
    def init_params(self, params, cfg):
        """The initial training parameters from a fresh SAE's."""

    @abc.abstractmethod
    def init_extra(self, cfg, d_sae: int) -> dict:
        """Training state beside params, optimiser state and usage EMA."""

    @abc.abstractmethod
    def loss(self, params, x: jax.Array, usage_ema: jax.Array, extra: dict, step, cfg, *,
             members_axis: str | None = None) -> tuple[jax.Array, dict]:
        """``(total, aux)`` for one batch (:func:`sae_jax.recipes.recipe_loss`)."""

    @abc.abstractmethod
    def apply_state_updates(self, params, extra: dict, aux: dict, cfg) -> tuple[dict, dict]:
        """After the optimiser update: parameters and state the step sets itself."""

    @abc.abstractmethod
    def metric_names(self, cfg) -> tuple[str, ...]:
        """Scalars of ``aux`` the step logs besides the common ones."""

    @abc.abstractmethod
    def resampled_params(self, new_params: dict, params: dict, dead: jax.Array, cfg) -> dict:
        """``new_params`` (resampling's new weights) with the architecture's own
        parameters of the ``dead (F,)`` features reset."""

    @abc.abstractmethod
    def curve_metrics(self, cfg) -> tuple[tuple[str, str], ...]:
        """``((metrics key, title), ...)``: the logged terms of this architecture's own
        loss and state that its training curves draw beside the loss, MSE and L0 (none
        that it logs as a constant, such as another architecture's zero penalty)."""

    @abc.abstractmethod
    def dead_metric(self, cfg) -> tuple[str, str]:
        """``(metrics key, title)`` of the dead-feature count training acts on
        (resampling's or AuxK's), the title saying exactly what it counts: it is not the
        evaluation's count (:mod:`sae_jax.activity`, on held-out inputs)."""

    def fold_decoder_norms(self, params, norms):
        """``params`` with the decoder rows' ``norms (F,)`` folded into the encoder: the
        same SAE with unit rows (only where :attr:`folds_decoder_norms`)."""
        raise NotImplementedError(f"{self.name} cannot fold its decoder norms")

    # ------------------------------------------------------------ records and export

    @abc.abstractmethod
    def summary_fields(self, config) -> dict:
        """What a run's ``metrics.json`` records of the architecture."""

    @abc.abstractmethod
    def export_tensors(self, params, d_sae: int) -> dict:
        """SAELens tensors beside the four weights."""

    @abc.abstractmethod
    def export_fields(self, config) -> dict:
        """SAELens ``cfg.json`` fields beside the common ones."""

    @abc.abstractmethod
    def import_params(self, tensors: dict) -> dict:
        """Our extra parameters from an export's tensors (ValueError when they cannot
        be ours)."""
