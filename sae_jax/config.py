"""Configuration of an SAE training run (a frozen dataclass built from absl flags).

Defaults are the original's (docs/original.md §4, "CLI defaults"), except where a
comment says otherwise; configs/demo.flags scales them down for a CPU.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

from runkit.jsonio import read_json, write_json
from sae_jax.architectures import Architecture, get_architecture
from sae_jax.precision import COMPUTE_DTYPES

DATA_SOURCES = ("synthetic", "statink", "splatnlp_tsv")
CONCEPT_SET_SETTINGS = ("concepts_file", "concept_set_sha256")


@dataclass(frozen=True)
class SAETrainConfig:
    # --- SAE shape
    expansion_factor: float = 4.0
    clip_max: float = 6.0
    # --- optimiser
    lr: float = 1e-5
    weight_decay: float = 0.01  # torch AdamW's default, which the original used
    grad_clip: float = 1.0
    lr_final_fraction: float = 0.1  # cosine from lr to 0.1 x lr
    # --- loss and schedules (per SAE step)
    l1_coeff: float = 5e-6
    l1_start: float = 0.0
    l1_warmup_steps: int = 6000
    target_usage: float = 0.05
    usage_coeff: float = 1.5
    usage_floor: float = 0.05
    usage_warmup_steps: int = 6000
    usage_period: int = 60000
    usage_ema_decay: float = 0.99
    # Rows of each batch the soft firing estimate (the usage penalty's gradient) is taken
    # on; batch rows are independent draws, so a subsample is an unbiased, cheaper estimate.
    # 0 = every row.
    usage_estimate_rows: int = 256
    # dtype of the step's matmul operands ("float32" or "bfloat16": float32 sums, params
    # and optimiser state either way; see sae_jax/precision.py).
    compute_dtype: str = "float32"
    # Reproduce the original's two defects (frozen decoder, gradient-free usage term).
    original_behaviour: bool = False
    # --- architecture (README "Architectures"; sae_jax/architectures.py). The L1 and usage
    # settings above train relu_l1 only.
    architecture: str = "relu_l1"
    k: int = 32  # topk: features per row; batchtopk, matryoshka: mean features per row
    clip_all: bool = False  # clip the other architectures' features at clip_max too
    k_aux: int = 0  # AuxK: dead features per row reconstructing the error; 0 = input_dim // 2
    aux_coeff: float = 1 / 32  # AuxK loss weight (Gao et al. 2024)
    aux_relu: bool = False  # AuxK: ReLU the dead features' pre-activations (default: as they are)
    dead_after_rows: int = 10_000_000  # AuxK: dead after firing on none of this many rows
    threshold_decay: float = 0.99  # batchtopk, matryoshka: EMA of the inference threshold
    jumprelu_bandwidth: float = 0.001  # width of the straight-through kernel
    jumprelu_init_threshold: float = 0.001
    l0_coeff: float = 1e-3  # jumprelu: L0 penalty (warmed up over l1_warmup_steps)
    matryoshka_groups: tuple[int, ...] = ()  # feature group sizes, summing to d_sae
    # --- buffer and training loop
    buffer_size: int = 819_200
    buffer_dtype: str = "float32"  # or "bfloat16"
    min_buffer: int = 50_000  # start SAE training once this many activations are buffered
    primary_batch_size: int = 32
    sae_batch_size: int = 1024
    sae_steps_per_primary_step: int = 4
    epochs: int = 10
    data_fraction: float = 0.005
    # --- dead-feature resampling
    resample_steps: tuple[int, ...] = (7000, 14000, 28000)
    resample_weight: float = 0.2
    resample_bias: float = 0.0
    dead_threshold: float = 1e-8
    # --- data and bookkeeping
    data_source: str = "synthetic"
    data_path: str = ""
    num_builds: int = 200_000  # synthetic world size
    seed: int = 0
    log_every: int = 100  # SAE steps between metric transfers to the host
    checkpoint_every: int = 1000  # SAE steps between checkpoints
    eval_builds: int = 20_000  # held-out builds for evaluation
    concepts_file: str = ""  # synthetic only: a concept set file; "" = the built-in set
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
        for name in ("sae_batch_size", "primary_batch_size", "sae_steps_per_primary_step",
                     "epochs", "log_every", "checkpoint_every"):
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
        if self.data_source not in DATA_SOURCES:
            errors.append(f"unknown data source {self.data_source!r} (--data_source); choose "
                          f"one of {DATA_SOURCES}")
        if self.data_source != "synthetic" and not self.data_path:
            errors.append(f"data source {self.data_source!r} needs --data_path")
        if self.data_source != "synthetic" and self.concepts_file:
            errors.append(f"--concepts_file plants concepts in synthetic builds only; "
                          f"--data_source is {self.data_source!r}")
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
        # Architecture settings only where they differ from the defaults, for the same reason.
        for k in ARCHITECTURE_SETTINGS:
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
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SAETrainConfig)
             if f.name in ARCHITECTURE_SETTINGS}
