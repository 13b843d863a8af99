"""Configuration of an SAE training run (a frozen dataclass built from absl flags).

Defaults are the original's (docs/original.md §4, "CLI defaults"), except where a
comment says otherwise; configs/demo.flags scales them down for a CPU.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

from runkit.flags import setting
from runkit.jsonio import read_json, write_json
from sae_jax.architectures import Architecture, get_architecture
from sae_jax.precision import COMPUTE_DTYPES

CONCEPT_SET_SETTINGS = ("concepts_file", "concept_set_sha256")


@dataclass(frozen=True)
class SAETrainConfig:
    # --- SAE shape
    expansion_factor: float = setting(
        4.0, "SAE features per input dimension (512 x 4 = 2048 features).")
    clip_max: float = setting(
        6.0, "Upper clip of the feature activations (relu_l1; the other architectures only "
        "with --clip_all).")
    # --- optimiser
    lr: float = setting(
        1e-5, "Peak AdamW learning rate (cosine-annealed to lr_final_fraction x lr).")
    # torch AdamW's default, which the original used
    weight_decay: float = setting(
        0.01, "AdamW weight decay (thresholds of batchtopk, matryoshka and jumprelu take none).")
    grad_clip: float = setting(
        1.0, "Gradients are clipped to this global norm before the AdamW update.")
    lr_final_fraction: float = setting(
        0.1, "The learning rate anneals from lr to this fraction of lr over the run.")
    # --- loss and schedules (per SAE step)
    l1_coeff: float = setting(
        5e-6, "relu_l1: weight of the L1 penalty on the feature activations, once warmed up.")
    l1_start: float = setting(
        0.0, "relu_l1: L1 weight at step 0, raised linearly to l1_coeff over "
        "l1_warmup_steps.")
    l1_warmup_steps: int = setting(
        6000, "SAE steps over which the L1 weight (relu_l1) or the L0 weight (jumprelu) rises "
        "to its full value.")
    target_usage: float = setting(
        0.05, "relu_l1: firing rate each feature is pushed towards by the usage (KL) "
        "penalty.")
    usage_coeff: float = setting(
        1.5, "relu_l1: peak weight of the usage (KL) penalty.")
    usage_floor: float = setting(
        0.05, "relu_l1: weight of the usage penalty at step 0 and at the bottom of its "
        "periodic cosine.")
    usage_warmup_steps: int = setting(
        6000, "relu_l1: SAE steps over which the usage weight rises from usage_floor to "
        "usage_coeff.")
    usage_period: int = setting(
        60000, "relu_l1: period in SAE steps of the usage weight's cosine between usage_coeff "
        "and usage_floor after the warm-up.")
    usage_ema_decay: float = setting(
        0.99, "Decay of the per-feature firing-rate EMA that the usage penalty, the "
        "dead-feature count and resampling read.")
    # Rows of each batch the soft firing estimate (the usage penalty's gradient) is taken
    # on; batch rows are independent draws, so a subsample is an unbiased, cheaper estimate.
    usage_estimate_rows: int = setting(
        256, "Batch rows the usage penalty's soft firing estimate uses (0: all).")
    # See sae_jax/precision.py.
    compute_dtype: str = setting(
        "float32", "SAE step matmul operands: float32, or bfloat16 with float32 sums "
        "(parameters and optimiser state stay float32).")
    # Where the encoder starts matters for the L1 / L0 recipes: from a unit-norm encoder
    # their dictionaries can stay near their random start (benchmarks.peer_init_scale).
    encoder_init_scale: float = setting(
        1.0, "Multiplies the initial encoder weights (1: the architecture's own "
        "initialisation; SAELens starts its encoders at 0.1).")
    # SAELens trains JumpReLU with decoder rows free in norm; from unit rows ours kept many
    # latents dead on the peer benchmark's world (docs/peer_saelens.md, "What limits each").
    decoder_init_norm: float = setting(
        0.0, "0: the decoder rows stay unit norm through training. > 0 (jumprelu): they are "
        "free in norm, start at this norm with the encoder tied to them, and are folded "
        "back to unit rows (each norm moved into its encoder column, bias and threshold) "
        "when the SAE leaves training.")
    original_behaviour: bool = setting(
        False, "Reproduce the original's frozen decoder and gradient-free usage term "
        "(relu_l1 only).")
    # --- architecture (docs/training.md "Architectures"; sae_jax/architectures/). The L1 and usage
    # settings above train relu_l1 only.
    architecture: str = setting(
        "relu_l1", "SAE architecture: relu_l1, topk, batchtopk, jumprelu or matryoshka.")
    k: int = setting(
        32, "topk: active features per row; batchtopk and matryoshka: mean active features "
        "per row.")
    clip_all: bool = setting(
        False, "Clip the features of the architectures other than relu_l1 at clip_max too.")
    k_aux: int = setting(
        0, "AuxK (topk family): dead features per row that reconstruct the error; 0: half "
        "the input size.")
    aux_coeff: float = setting(
        1 / 32, "AuxK (topk family): weight of the auxiliary loss (Gao et al. 2024).")
    aux_relu: bool = setting(
        False, "AuxK (topk family): ReLU the dead features' pre-activations (default: use "
        "them as they are).")
    dead_after_rows: int = setting(
        10_000_000, "AuxK (topk family): a feature is dead after firing on none of this many "
        "training rows.")
    threshold_decay: float = setting(
        0.99, "batchtopk, matryoshka: EMA decay of the inference threshold.")
    jumprelu_bandwidth: float = setting(
        0.001, "jumprelu: width of the straight-through kernel that trains the thresholds.")
    jumprelu_init_threshold: float = setting(
        0.001, "jumprelu: every feature's threshold at initialisation and after a resample.")
    l0_coeff: float = setting(
        1e-3, "jumprelu: weight of the L0 penalty, warmed up over l1_warmup_steps.")
    matryoshka_groups: tuple[int, ...] = setting(
        (), "matryoshka: comma-separated sizes of the nested feature groups, summing to the "
        "number of features.")
    # --- buffer and training loop
    buffer_size: int = setting(
        819_200, "Activation buffer capacity (rows).")
    buffer_dtype: str = setting(
        "float32", "Buffer storage dtype: float32 or bfloat16.")
    min_buffer: int = setting(
        50_000, "Buffered activations needed before SAE training starts.")
    primary_batch_size: int = setting(
        32, "Examples per primary model forward pass whose pooled activations enter the "
        "buffer (with --activations: rows read into the buffer at a time).")
    sae_batch_size: int = setting(
        1024, "Activation rows sampled from the buffer per SAE step.")
    sae_steps_per_primary_step: int = setting(
        4, "SAE steps after each primary batch once min_buffer is reached.")
    epochs: int = setting(
        10, "Passes over the training examples (each of data_fraction of them).")
    data_fraction: float = setting(
        0.005, "Fraction of the training examples used per epoch (the start of each "
        "epoch's shuffled order).")
    # --- dead-feature resampling
    resample_steps: tuple[int, ...] = setting(
        (7000, 14000, 28000), "Comma-separated SAE steps at which dead features are "
        "resampled (relu_l1, jumprelu; empty for the topk family).")
    resample_weight: float = setting(
        0.2, "A resampled feature's encoder column norm, as a multiple of the live "
        "features' mean.")
    resample_bias: float = setting(
        0.0, "A resampled feature's encoder bias.")
    dead_threshold: float = setting(
        1e-8, "A feature whose firing-rate EMA is below this counts as dead (and is "
        "resampled at resample_steps).")
    # --- data and bookkeeping
    data_source: str = setting(
        "synthetic", "Where the builds come from: synthetic (generated), statink (a stat.ink "
        "battle CSV) or splatnlp_tsv (SplatNLP's tokenized TSV).")
    data_path: str = setting(
        "", "File of the data source (unused for synthetic).")
    num_builds: int = setting(
        200_000, "Builds to load (a seeded random subset of a larger file; synthetic: to "
        "generate).")
    seed: int = setting(
        0, "Seed of the SAE's initialisation and batch order, and of the builds drawn and "
        "split (unless the --primary_dir run split the same data with its own).")
    log_every: int = setting(
        100, "SAE steps between metric transfers to the host.")
    checkpoint_every: int = setting(
        1000, "SAE steps between checkpoints.")
    eval_builds: int = setting(
        20_000, "Held-out builds used for evaluation (at most).")
    activations: str = setting(
        "", "Train on activations you already have instead of the primary's: a .npy or "
        ".safetensors file of (rows, d_in) floats, or a folder of such shards (name order).")
    eval_rows: int = setting(
        20_000, "With --activations: rows held out for evaluation and the analysis (at most "
        "a tenth of the rows).")
    concepts_file: str = setting(
        "", "synthetic only: JSON concept set to plant (default: the built-in 19; with "
        "--primary_dir, the set that primary was trained on).")
    # Filled in by the run from the concept set it plants ("" = built-in), so that resuming
    # with a changed set is caught by the resume policy; not a flag.
    concept_set_sha256: str = ""
    extra: dict = field(default_factory=dict)

    def validate(self, *, total_sae_steps: int | None = None, d_sae: int | None = None) -> None:
        """Refuse settings that cannot work, with a message naming the flag (``--name``).
        ``d_sae`` (the number of features, once the input size is known) checks ``--k``,
        ``--k_aux`` and ``--matryoshka_groups`` against it."""
        # Every number must be finite (NaN slips through comparisons: nan <= 0 is False).
        nonfinite = [f.name for f in dataclasses.fields(self)
                     if isinstance(getattr(self, f.name), float)
                     and not math.isfinite(getattr(self, f.name))]
        errors = [f"--{name} must be a finite number, got {getattr(self, name)}"
                  for name in nonfinite]

        def check(name: str, ok: bool, message: str) -> None:
            if name not in nonfinite and not ok:
                errors.append(f"--{name} {message}, got {getattr(self, name)!r}")

        check("expansion_factor", self.expansion_factor > 0, "must be > 0")
        check("clip_max", self.clip_max > 0, "must be > 0")
        check("lr", self.lr > 0, "must be positive")
        check("encoder_init_scale", self.encoder_init_scale > 0, "must be > 0")
        check("decoder_init_norm", self.decoder_init_norm >= 0, "must be >= 0")
        check("decoder_init_norm", self.decoder_init_norm == 0 or self.arch.folds_decoder_norms,
              f"must be 0 for --architecture={self.architecture}: only architectures whose "
              "inference SAE can take the decoder norms back train with free-norm rows "
              "(jumprelu)")
        check("weight_decay", self.weight_decay >= 0, "must be >= 0")
        check("grad_clip", self.grad_clip > 0, "must be positive")
        check("lr_final_fraction", 0 <= self.lr_final_fraction <= 1, "must be in [0, 1]")
        check("l1_coeff", self.l1_coeff >= 0, "must be >= 0")
        check("l1_start", self.l1_start >= 0, "must be >= 0")
        check("usage_coeff", self.usage_coeff >= 0, "must be >= 0")
        check("usage_floor", self.usage_floor >= 0, "must be >= 0")
        check("usage_period", self.usage_period > 0, "must be positive")
        check("usage_ema_decay", 0 < self.usage_ema_decay < 1, "must be in (0, 1)")
        check("dead_threshold", self.dead_threshold >= 0, "must be >= 0")
        check("data_fraction", 0 < self.data_fraction <= 1, "must be in (0, 1]")
        check("eval_rows", self.eval_rows > 0, "must be positive")
        for name in ("sae_batch_size", "primary_batch_size", "sae_steps_per_primary_step",
                     "epochs", "log_every", "checkpoint_every", "eval_builds"):
            check(name, getattr(self, name) > 0, "must be positive")
        if self.buffer_size < self.sae_batch_size:
            errors.append(f"--buffer_size {self.buffer_size} is smaller than one SAE batch "
                          f"(--sae_batch_size {self.sae_batch_size})")
        if self.min_buffer > self.buffer_size:
            errors.append(f"--min_buffer {self.min_buffer} exceeds --buffer_size "
                          f"{self.buffer_size}")
        if self.buffer_dtype not in ("float32", "bfloat16"):
            errors.append(f"--buffer_dtype must be float32 or bfloat16, got "
                          f"{self.buffer_dtype!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            errors.append(f"--compute_dtype must be one of {COMPUTE_DTYPES}, got "
                          f"{self.compute_dtype!r}")
        check("target_usage", 0 < self.target_usage < 1, "must be in (0, 1)")
        check("usage_estimate_rows", self.usage_estimate_rows >= 0, "must be >= 0")
        if any(s <= 0 for s in self.resample_steps):
            errors.append(f"--resample_steps must be positive, got {self.resample_steps}")
        if total_sae_steps is not None:
            late = [s for s in self.resample_steps if s > total_sae_steps]
            if late:
                errors.append(f"resample step(s) {late} lie beyond the run's {total_sae_steps} "
                              "SAE steps (--resample_steps)")
        errors += self._architecture_errors(check, d_sae)
        if errors:
            raise ValueError("invalid SAE training settings: " + "; ".join(errors))

    def _architecture_errors(self, check, d_sae: int | None) -> list[str]:
        try:
            arch = self.arch
        except ValueError as e:  # names the bad value and the choices
            return [str(e)]
        return arch.settings_errors(self, check, d_sae)

    @property
    def arch(self) -> Architecture:
        """The architecture's plugin (:mod:`sae_jax.architectures`)."""
        return get_architecture(self.architecture)

    def sae_config(self, input_dim: int):
        """The SAEConfig this run trains (relu_l1: exactly the original's three fields)."""
        return self.arch.sae_config(self, input_dim)

    def aux_k(self, input_dim: int, d_sae: int) -> int:
        """AuxK's k: ``--k_aux``, or half the input size when 0; at most ``d_sae``."""
        return min(self.k_aux or max(input_dim // 2, 1), d_sae)

    def to_dict(self) -> dict:
        """The recorded settings; the concept set keys only when a custom set is used, so
        runs recorded before concept sets existed still match."""
        d = dataclasses.asdict(self)
        for k in CONCEPT_SET_SETTINGS:
            if not d[k]:
                del d[k]
        # Architecture and activation-file settings only where they differ from the
        # defaults, for the same reason.
        for k in ARCHITECTURE_SETTINGS + ACTIVATION_FILE_SETTINGS:
            if d[k] == _DEFAULTS[k]:
                del d[k]
        return d

    def to_json(self, path: str | os.PathLike) -> None:
        write_json(path, dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, raw: dict, *, where: str = "settings") -> SAETrainConfig:
        """The config from stored settings; an unknown setting is an error naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"{where}: unknown SAE settings {unknown}; written by another "
                             "version of this tool?")
        raw = dict(raw)
        raw["resample_steps"] = tuple(raw.get("resample_steps", ()))
        raw["matryoshka_groups"] = tuple(raw.get("matryoshka_groups", ()))
        return cls(**raw)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> SAETrainConfig:
        return cls.from_dict(read_json(path, what="SAE run settings file"), where=str(path))


ARCHITECTURE_SETTINGS = ("architecture", "k", "clip_all", "k_aux", "aux_coeff", "aux_relu",
                         "dead_after_rows", "threshold_decay", "jumprelu_bandwidth",
                         "jumprelu_init_threshold", "l0_coeff", "matryoshka_groups")
ACTIVATION_FILE_SETTINGS = ("activations", "eval_rows")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SAETrainConfig)
             if f.name in ARCHITECTURE_SETTINGS + ACTIVATION_FILE_SETTINGS}
