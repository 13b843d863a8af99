"""What each library trains in the SAELens peer benchmark, per architecture.

Both libraries get the same width, the same k (TopK, BatchTopK, Matryoshka), the same
batch size and the same number of training samples. Two comparisons (``RECIPES``, the
benchmark's ``--recipes``): ``recommended``, each library's own learning rate, and
``same_lr``, both at ours and both constant.

- ours: ``configs/demo.flags`` (AdamW cosine-annealed to a tenth of its learning rate,
  weight decay 0.01, gradients clipped at norm 1; AuxK counts a latent dead after 32,768
  silent rows and weighs its loss 0.125) at the demo's learning rate scaled to the input
  width (:func:`ours_lr`: 2.83e-3 for 64 wide), with ``configs/demo_jumprelu.flags``'s
  JumpReLU bandwidth, the warm-ups and resampling steps scaled to the run's length as the
  demo's are to its 6,000 steps (warm-ups over the first sixth, resampling at a sixth and
  a third). Three changes for this world: relu_l1's usage penalty is off (it pushes every
  latent towards firing on 5% of rows, four times this world's mean rate; SAELens's
  standard SAE has none) and its clip is raised out of reach (SAELens's has none either);
  JumpReLU's thresholds start at 0.1 rather than 0.05 (at 0.05 they had not risen far
  enough by the end of the run: L0 23 against the true 6.4); relu_l1's encoder starts at a
  tenth of its scale (``PENALTY_ENCODER_INIT_SCALE``, as SAELens's decoder_init_norm; from
  unit scale its dictionary barely moved); JumpReLU trains with decoder rows free in norm,
  started at 0.1 with the encoder tied to them (``FREE_ROWS_INIT_NORM``,
  ``--decoder_init_norm``: SAELens's parametrisation; with unit rows a quarter of its
  latents stayed dead).
- SAELens: ``SyntheticSAERunnerConfig``'s defaults (Adam, lr 3e-4 constant, no warm-up,
  betas 0.9 / 0.999, gradients clipped at norm 1 by its trainer, dead latents after 1,000
  steps without firing) and each training SAE config's defaults; ``same_lr`` changes only
  its learning rate (and ours anneals no more: constant, as SAELens's).

The architectures with a sparsity coefficient instead of k (relu_l1 / ``standard``: the L1
weight; jumprelu: the L0 weight) take one coefficient per library and comparison, chosen
with short trial runs on this world so that the trained SAEs land near the true L0
(``Recipes.penalties``); the plot puts every SAE at its measured L0, so a miss shows.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from sae_jax.architectures import ARCHITECTURES, get_architecture

# The demo's optimiser (configs/demo.flags) but for the learning rate (ours_lr).
OURS_OPTIMISER = {"weight_decay": 0.01, "grad_clip": 1.0}
# demo.flags (AuxK), demo_jumprelu.flags (kernel); usage off, threshold 0.1 (docstring).
OURS_RECIPE = {"usage_coeff": 0.0, "usage_floor": 0.0,
               "jumprelu_bandwidth": 0.05, "jumprelu_init_threshold": 0.1,
               "dead_after_rows": 32_768, "aux_coeff": 0.125, "threshold_decay": 0.99,
               "clip_max": 1e4}
# The encoder's initial scale of the architectures trained with a sparsity coefficient
# (relu_l1, jumprelu): SAELens's decoder_init_norm. From unit-norm encoder columns their
# dictionaries barely moved on this world (benchmarks/peer_init_scale.py); the TopK family
# selects k latents whatever the scale and keeps 1.
PENALTY_ENCODER_INIT_SCALE = 0.1
# JumpReLU trains with decoder rows free in norm, started here with the encoder tied to them
# (--decoder_init_norm, SAELens's parametrisation; folded back to unit rows after training):
# from unit rows it kept a quarter of its latents dead on this world.
FREE_ROWS_INIT_NORM = 0.1
# The demo's learning rate and the input width it was chosen at (ours_lr).
DEMO_LR, DEMO_D_IN = 1e-3, 512
SAELENS_LR = 3e-4  # SyntheticSAERunnerConfig's default, constant


def ours_lr(d_in: int) -> float:
    """Our learning rate for inputs ``d_in`` wide: the demo's, scaled by
    ``sqrt(DEMO_D_IN / d_in)``. Adam moves every weight by about the learning rate per
    step, and a unit-norm encoder column of ``d_in`` entries has entries of about
    ``1 / sqrt(d_in)``: the scaling keeps a step's relative change to the column what it
    is on the demo (1e-3 at 512 wide; 2.83e-3 at this world's 64)."""
    return DEMO_LR * math.sqrt(DEMO_D_IN / d_in)


@dataclass(frozen=True)
class Recipes:
    """Each library's learning rate and sparsity coefficients for one comparison.

    ``lrs(d_in)`` gives (ours, SAELens's); ``penalties[library]`` maps our penalty setting
    (the plugin's ``penalty_setting``) to its value, chosen on the default world so that
    the trained SAEs land near its true L0 (module docstring)."""

    name: str
    description: str
    saelens_lr: float | None  # None: ours (the same learning rate)
    ours_lr_final_fraction: float  # 0.1: the demo's cosine anneal; 1: constant, as SAELens's
    penalties: dict

    def lrs(self, d_in: int) -> tuple[float, float]:
        ours = ours_lr(d_in)
        return ours, (ours if self.saelens_lr is None else self.saelens_lr)

    def to_dict(self, d_in: int) -> dict:
        ours, theirs = self.lrs(d_in)
        return {"name": self.name, "description": self.description,
                "lr": {"ours": ours, "saelens": theirs},
                "ours_lr_final_fraction": self.ours_lr_final_fraction,
                "penalties": self.penalties}


RECIPES = {r.name: r for r in (
    Recipes("recommended", "each library's own learning rate and schedule: ours the demo's "
            "scaled to the input width (ours_lr), cosine-annealed to a tenth; SAELens's its "
            "default 3e-4, constant",
            SAELENS_LR, 0.1, {"ours": {"l1_coeff": 2e-2, "l0_coeff": 1.5e-3},
                         "saelens": {"l1_coeff": 2.5, "l0_coeff": 1.0}}),  # l0: its default
    Recipes("same_lr", "both libraries at our learning rate (ours_lr), both constant "
            "(SAELens's schedule): what the libraries do differently once learning rate and "
            "schedule are the same",
            None, 1.0, {"ours": {"l1_coeff": 2e-2, "l0_coeff": 1.5e-3},
                   "saelens": {"l1_coeff": 1.25, "l0_coeff": 0.1}}),
)}
DEFAULT_RECIPES = RECIPES["recommended"]
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


def penalty_of(library: str, architecture: str, overrides: dict | None = None,
               recipes: Recipes = DEFAULT_RECIPES) -> dict:
    """``{our setting: value}`` of the architecture's sparsity coefficient for ``library``
    (empty for the architectures that take k)."""
    setting = get_architecture(architecture).penalty_setting
    if setting is None:
        return {}
    values = {**recipes.penalties[library], **(overrides or {})}
    return {setting: values[setting]}


def ours_config(architecture: str, plan: Plan, seed: int, penalty_overrides=None,
                recipes: Recipes = DEFAULT_RECIPES):
    """Our :class:`~sae_jax.config.SAETrainConfig` for one SAE (module docstring)."""
    from sae_jax.config import SAETrainConfig

    arch = get_architecture(architecture)
    sixth = max(plan.steps // 6, 1)
    settings = {
        **OURS_OPTIMISER, **OURS_RECIPE, "lr": recipes.lrs(plan.d_in)[0],
        "lr_final_fraction": recipes.ours_lr_final_fraction,
        "encoder_init_scale": PENALTY_ENCODER_INIT_SCALE
        if arch.penalty_setting and not arch.folds_decoder_norms else 1.0,
        "decoder_init_norm": FREE_ROWS_INIT_NORM if arch.folds_decoder_norms else 0.0,
        "architecture": architecture, "expansion_factor": plan.width / plan.d_in,
        "k": plan.k, "sae_batch_size": plan.batch, "buffer_size": plan.train_rows,
        "min_buffer": min(plan.batch, plan.train_rows), "seed": seed,
        "l1_warmup_steps": sixth, "usage_warmup_steps": sixth,
        "usage_period": 10 * sixth, "resample_steps": (sixth, 2 * sixth),
        **arch.required_settings(plan.width),
        **penalty_of("ours", architecture, penalty_overrides, recipes),
    }
    cfg = SAETrainConfig(**settings)
    cfg.validate(total_sae_steps=plan.steps, d_sae=plan.width)
    return cfg


def saelens_sae_config(architecture: str, plan: Plan, penalty_overrides=None,
                       recipes: Recipes = DEFAULT_RECIPES):
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
    for setting, value in penalty_of("saelens", architecture, penalty_overrides,
                                     recipes).items():
        settings[SAELENS_PENALTY_FIELD[setting]] = value
    return config_class(**settings)


def saelens_trainer_config(sae_config, world_config, plan: Plan,
                           recipes: Recipes = DEFAULT_RECIPES):
    """SAELens's trainer settings: ``SyntheticSAERunnerConfig``'s defaults (schedule, Adam,
    windows) at the recipes' learning rate for ``plan.samples`` samples in batches of
    ``plan.batch``, wandb off."""
    from sae_lens import LoggingConfig
    from sae_lens.synthetic import SyntheticSAERunnerConfig

    runner = SyntheticSAERunnerConfig(
        synthetic_model=world_config, sae=sae_config, training_samples=plan.samples,
        batch_size=plan.batch, lr=recipes.lrs(plan.d_in)[1], output_path=None, checkpoint_path=None,
        logger=LoggingConfig(log_to_wandb=False))
    return runner.to_sae_trainer_config()
