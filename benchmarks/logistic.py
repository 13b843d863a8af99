"""Logistic-regression bounds shared by the ceiling benchmarks: how well a weighted sum of
all the inputs could predict each target, scored the way the project scores detectors
(F1 at a threshold chosen on the fit rows, measured on held-out rows)."""

from __future__ import annotations

import numpy as np


def logistic_f1(x_fit, y_fit, x_held, y_held, *, steps: int = 600):
    """``x (n, K)`` float inputs, ``y (n, T)`` bool targets -> ``(fit F1 (T,), held-out F1
    (T,))``: one L2-regularised logistic regression per target, trained by Adam on the fit
    rows, its threshold the one with the best fit-row F1."""
    import jax
    import jax.numpy as jnp
    import optax

    y_fit, y_held = np.asarray(y_fit, bool), np.asarray(y_held, bool)
    xf, yf = jnp.asarray(x_fit, jnp.float32), jnp.asarray(y_fit, jnp.float32)
    params = (jnp.zeros((xf.shape[1], yf.shape[1])), jnp.zeros(yf.shape[1]))
    opt = optax.adam(0.05)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        def loss(p):
            z = xf @ p[0] + p[1]
            return (optax.sigmoid_binary_cross_entropy(z, yf).mean(0).sum()
                    + 1e-4 * jnp.sum(p[0] ** 2))
        updates, state = opt.update(jax.grad(loss)(params), state)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    z_fit = np.asarray(xf @ params[0] + params[1])
    z_held = np.asarray(jnp.asarray(x_held, jnp.float32) @ params[0] + params[1])
    fit_f1, held_f1 = np.zeros(yf.shape[1]), np.zeros(yf.shape[1])
    for j in range(yf.shape[1]):
        order = np.argsort(-z_fit[:, j])
        tp = np.cumsum(y_fit[order, j])
        f1 = 2 * tp / (y_fit[:, j].sum() + np.arange(1, len(order) + 1))
        cut = z_fit[order[np.argmax(f1)], j]
        fit_f1[j] = f1.max()
        pred, truth = z_held[:, j] >= cut, y_held[:, j]
        held_f1[j] = 2 * (pred & truth).sum() / max(pred.sum() + truth.sum(), 1)
    return fit_f1, held_f1
