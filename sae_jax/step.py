"""The SAE training step, many at a time in one ``lax.scan`` on the device.

``make_train_steps(cfg, total_steps, num_steps)`` returns a jitted function
``(state, buffer, key) -> (state, metrics)`` that runs ``num_steps`` SAE steps
without leaving the device: draw a batch from the activation buffer, compute the
loss and its gradient (the loss also yields L0 and the new usage EMA, so there
is no second forward pass for logging), update through the optax chain and, at
the configured resample steps, re-initialise dead features (a ``lax.cond``
inside the scan, so it happens after exactly that step).

Randomness: the batch of step ``s`` is drawn with ``fold_in(key, s)`` and its
resampling with a separate fold of the same key, so a resumed run sees the same
numbers as an uninterrupted one.

Sharding: no host round trips and no data-dependent shapes. The buffer may be
sharded over a "data" mesh axis; pass ``batch_sharding`` to pin each drawn batch
to that axis too; params and optimiser state are expected replicated.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sae_jax.buffer import ActivationBuffer, sample
from sae_jax.config import SAETrainConfig
from sae_jax.model import SparseAutoencoder
from sae_jax.recipes import apply_state_updates, init_extra, init_params, metric_names, recipe_loss
from sae_jax.resample import resample_dead_features
from sae_jax.schedules import learning_rate_schedule
from sae_jax.transforms import make_optimizer

# Folded into the run key to give resampling its own random stream.
_RESAMPLE_STREAM = 0x5E5A


class TrainState(NamedTuple):
    params: dict  # SAE params dict (W_enc, b_enc, W_dec, b_dec)
    opt_state: Any  # state of make_optimizer(cfg, total_steps)
    usage_ema: jax.Array  # Float[Array, "d_sae"]
    step: jax.Array  # int32 scalar: SAE steps done
    extra: dict  # the architecture's training state (sae_jax.recipes; {} for relu_l1)


def init_train_state(sae: SparseAutoencoder, cfg: SAETrainConfig, total_steps: int) -> TrainState:
    """A fresh state from an SAE module, with the architecture's initialisation
    (:func:`sae_jax.recipes.init_params`; its arrays are copied, so donating the state
    leaves the module usable)."""
    if sae.config.architecture != cfg.architecture:
        raise ValueError(f"the SAE is a {sae.config.architecture} SAE, the settings train "
                         f"--architecture={cfg.architecture}")
    params = init_params(jax.tree.map(jnp.copy, sae.params()), cfg)
    opt_state = make_optimizer(cfg, total_steps).init(params)
    usage_ema = jnp.array(sae.usage_ema[...], jnp.float32)
    extra = init_extra(cfg, sae.hidden_dim)
    return TrainState(params, opt_state, usage_ema, jnp.zeros((), jnp.int32), extra)


# Scalars averaged over the steps of one call.
MEAN_METRICS = (
    "loss", "mse", "l1", "kl", "l0", "l1_coeff", "usage_coeff", "lr", "grad_norm",
)


def step_batch(buffer: ActivationBuffer, key: jax.Array, step, cfg, batch_sharding):
    """The batch SAE step ``step`` draws from the buffer."""
    x = sample(buffer, jax.random.fold_in(key, step), cfg.sae_batch_size)
    if batch_sharding is not None:
        x = jax.lax.with_sharding_constraint(x, batch_sharding)
    return x


def one_step(state: TrainState, buffer: ActivationBuffer, key: jax.Array, *, cfg, optimizer,
             lr_schedule, resample_at, batch_sharding, x=None, members_axis=None):
    """One SAE step, unjitted: a single run's (:func:`steps_body`) and, vmapped, a stack's
    (:mod:`sae_jax.stack`). ``x``: the batch, when drawn already; ``members_axis``: the
    vmap's axis name in a stack."""
    if x is None:
        x = step_batch(buffer, key, state.step, cfg, batch_sharding)

    def loss_fn(params):
        return recipe_loss(params, x, state.usage_ema, state.extra, state.step, cfg,
                           members_axis=members_axis)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params, extra = apply_state_updates(params, state.extra, aux, cfg)
    usage_ema = aux["usage_ema"]
    done = state.step + 1

    n_resampled = jnp.zeros((), jnp.int32)
    if resample_at:
        resample_key = jax.random.fold_in(jax.random.fold_in(key, _RESAMPLE_STREAM), state.step)

        def resample(carry):
            return resample_dead_features(*carry, buffer, resample_key, cfg)

        def keep(carry):
            return (*carry, jnp.zeros((), jnp.int32))

        due = jnp.any(done == jnp.asarray(resample_at, jnp.int32))
        params, opt_state, usage_ema, n_resampled = jax.lax.cond(
            due, resample, keep, (params, opt_state, usage_ema)
        )

    metrics = {
        "loss": loss,
        "mse": aux["mse"],
        "l1": aux["l1"],
        "kl": aux["kl"],
        "l0": aux["l0"],
        "l1_coeff": aux["l1_coeff"],
        "usage_coeff": aux["usage_coeff"],
        "lr": jnp.asarray(lr_schedule(state.step), jnp.float32),
        "grad_norm": grad_norm,
        "n_resampled": n_resampled,
        **{k: aux[k] for k in metric_names(cfg)},
    }
    return TrainState(params, opt_state, usage_ema, done, extra), metrics


def check_step_counts(total_steps: int, num_steps: int) -> None:
    """Refuse a run of no SAE steps, or calls of none."""
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")


def steps_body(cfg: SAETrainConfig, total_steps: int, num_steps: int, batch_sharding=None):
    """The unjitted ``(state, buffer, key) -> (state, metrics)`` of :func:`make_train_steps`,
    for callers that run it inside a jitted function of their own."""
    check_step_counts(total_steps, num_steps)
    optimizer = make_optimizer(cfg, total_steps)
    lr_schedule = learning_rate_schedule(cfg, total_steps)
    resample_at = tuple(sorted(int(s) for s in cfg.resample_steps))

    def run(state: TrainState, buffer: ActivationBuffer, key: jax.Array):
        def body(carry, _):
            return one_step(carry, buffer, key, cfg=cfg, optimizer=optimizer,
                             lr_schedule=lr_schedule, resample_at=resample_at,
                             batch_sharding=batch_sharding)

        state, per_step = jax.lax.scan(body, state, None, length=num_steps)
        metrics = {k: jnp.mean(per_step[k]) for k in MEAN_METRICS + metric_names(cfg)}
        metrics["n_resampled"] = jnp.sum(per_step["n_resampled"])
        metrics["dead_count"] = jnp.sum(state.usage_ema < cfg.dead_threshold, dtype=jnp.int32)
        metrics["finite"] = jnp.all(jnp.isfinite(per_step["loss"]))
        metrics["step"] = state.step
        return state, metrics

    return run


def make_train_steps(cfg: SAETrainConfig, total_steps: int, num_steps: int, *,
                     batch_sharding: jax.sharding.Sharding | None = None):
    """``fn(state, buffer, key) -> (state, metrics)`` running ``num_steps`` SAE steps.

    ``state`` is donated. ``total_steps`` is the run's number of SAE updates (it sets the
    lr schedule). ``metrics``: means over the steps of loss, mse, l1, kl, l0, l1_coeff,
    usage_coeff, lr, grad_norm; ``n_resampled`` (total over the steps), ``dead_count``
    (usage EMA below threshold after the last step), ``finite`` (every loss finite) and
    ``step`` (SAE steps done). Each call returns a new function, compiled at its first
    use: make it once and keep it.
    """
    return jax.jit(steps_body(cfg, int(total_steps), int(num_steps), batch_sharding),
                   donate_argnums=0)
