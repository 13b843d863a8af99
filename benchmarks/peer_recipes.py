"""What each library trains in the SAELens peer benchmark, per architecture.

Both libraries get the same width, the same k (TopK, BatchTopK, Matryoshka), the same
batch size and the same number of training samples; each uses its own recommended
optimiser and schedule:

- ours: ``configs/demo.flags`` (AdamW, lr 1e-3 cosine-annealed to 1e-4, weight decay
  0.01, gradients clipped at norm 1; AuxK counts a latent dead after 32,768 silent rows
  and weighs its loss 0.125), with ``configs/demo_jumprelu.flags``'s JumpReLU bandwidth,
  the warm-ups and resampling steps scaled to the run's length as the demo's are to its
  6,000 steps (warm-ups over the first sixth, resampling at a sixth and a third). Two
  changes for this world: relu_l1's usage penalty is off (it pushes every latent towards
  firing on 5% of rows, four times this world's mean rate; SAELens's standard SAE has
  none) and its clip is raised out of reach (SAELens's has none either); JumpReLU's
  thresholds start at 0.1 rather than 0.05 (at 0.05 they had not risen far enough by the
  end of the run: L0 23 against the true 6.4).
- SAELens: ``SyntheticSAERunnerConfig``'s defaults (Adam, lr 3e-4 constant, no warm-up,
  betas 0.9 / 0.999, gradients clipped at norm 1 by its trainer, dead latents after 1,000
  steps without firing) and each training SAE config's defaults.

The architectures with a sparsity coefficient instead of k (relu_l1 / ``standard``: the L1
weight; jumprelu: the L0 weight) take one coefficient per library, chosen on this world so
that the trained SAEs land near the true L0 (``PENALTIES``); the plot puts every SAE at its
measured L0, so a miss shows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from sae_jax.architectures import ARCHITECTURES, get_architecture

OURS_OPTIMISER = {"lr": 1e-3, "lr_final_fraction": 0.1, "weight_decay": 0.01, "grad_clip": 1.0}
# demo.flags (AuxK), demo_jumprelu.flags (kernel); usage off, threshold 0.1 (docstring).
OURS_RECIPE = {"usage_coeff": 0.0, "usage_floor": 0.0,
               "jumprelu_bandwidth": 0.05, "jumprelu_init_threshold": 0.1,
               "dead_after_rows": 32_768, "aux_coeff": 0.125, "threshold_decay": 0.99,
               "clip_max": 1e4}
SAELENS_LR = 3e-4  # SyntheticSAERunnerConfig's default, constant

# Sparsity coefficients, keyed by our setting's name (the plugin's penalty_setting), for
# each library; chosen on the default world to land near its true L0 (module docstring).
PENALTIES = {
    "ours": {"l1_coeff": 1.5e-2, "l0_coeff": 1e-2},
    "saelens": {"l1_coeff": 2.5, "l0_coeff": 1.0},  # l0: SAELens's default
}
# SAELens's config field for each of our penalty settings.
SAELENS_PENALTY_FIELD = {"l1_coeff": "l1_coefficient", "l0_coeff": "l0_coefficient"}


@dataclass(frozen=True)
class Plan:
    """The shape of every training run: ``samples`` rows per SAE in batches of ``batch``,
    drawn from a training array of ``train_rows``."""

    d_in: int
    width: int
    k: int
    batch: int
    samples: int
    train_rows: int

    @property
    def steps(self) -> int:
        return self.samples // self.batch

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "steps": self.steps}


def check_architectures(names) -> tuple[str, ...]:
    """``names`` as a tuple, each one of ours (ValueError naming an unknown one)."""
    names = tuple(names)
    unknown = [n for n in names if n not in ARCHITECTURES]
    if unknown or not names:
        raise ValueError(f"--architectures: {unknown or 'none given'}; choose from "
                         f"{', '.join(ARCHITECTURES)}")
    return names


def penalty_of(library: str, architecture: str, overrides: dict | None = None) -> dict:
    """``{our setting: value}`` of the architecture's sparsity coefficient for ``library``
    (empty for the architectures that take k)."""
    setting = get_architecture(architecture).penalty_setting
    if setting is None:
        return {}
    values = {**PENALTIES[library], **(overrides or {})}
    return {setting: values[setting]}


def ours_config(architecture: str, plan: Plan, seed: int, penalty_overrides=None):
    """Our :class:`~sae_jax.config.SAETrainConfig` for one SAE (module docstring)."""
    from sae_jax.config import SAETrainConfig

    arch = get_architecture(architecture)
    sixth = max(plan.steps // 6, 1)
    settings = {
        **OURS_OPTIMISER, **OURS_RECIPE,
        "architecture": architecture, "expansion_factor": plan.width / plan.d_in,
        "k": plan.k, "sae_batch_size": plan.batch, "buffer_size": plan.train_rows,
        "min_buffer": min(plan.batch, plan.train_rows), "seed": seed,
        "l1_warmup_steps": sixth, "usage_warmup_steps": sixth,
        "usage_period": 10 * sixth, "resample_steps": (sixth, 2 * sixth),
        **arch.required_settings(plan.width),
        **penalty_of("ours", architecture, penalty_overrides),
    }
    cfg = SAETrainConfig(**settings)
    cfg.validate(total_sae_steps=plan.steps, d_sae=plan.width)
    return cfg


def saelens_sae_config(architecture: str, plan: Plan, penalty_overrides=None):
    """SAELens's training SAE config for one SAE: the class its registry names for the
    architecture's training recipe, its defaults but for width, k, the Matryoshka widths
    (ours, as cumulative widths) and the sparsity coefficient."""
    from sae_lens.registry import get_sae_training_class

    arch = get_architecture(architecture)
    _, config_class = get_sae_training_class(arch.saelens_training_name())
    fields = {f.name for f in dataclasses.fields(config_class)}
    settings = {"d_in": plan.d_in, "d_sae": plan.width}
    if "k" in fields:  # the architectures that select k features
        settings["k"] = plan.k
    groups = arch.required_settings(plan.width).get("matryoshka_groups")
    if groups:
        settings["matryoshka_widths"] = [int(w) for w in np.cumsum(groups)]
    for setting, value in penalty_of("saelens", architecture, penalty_overrides).items():
        settings[SAELENS_PENALTY_FIELD[setting]] = value
    return config_class(**settings)


def saelens_trainer_config(sae_config, world_config, plan: Plan):
    """SAELens's trainer settings: ``SyntheticSAERunnerConfig``'s defaults (lr, schedule,
    Adam, windows) for ``plan.samples`` samples in batches of ``plan.batch``, wandb off."""
    from sae_lens import LoggingConfig
    from sae_lens.synthetic import SyntheticSAERunnerConfig

    runner = SyntheticSAERunnerConfig(
        synthetic_model=world_config, sae=sae_config, training_samples=plan.samples,
        batch_size=plan.batch, lr=SAELENS_LR, output_path=None, checkpoint_path=None,
        logger=LoggingConfig(log_to_wandb=False))
    return runner.to_sae_trainer_config()
