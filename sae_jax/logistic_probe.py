"""Linear probes: many small L2-regularised logistic regressions fitted at once.

A probe predicts a binary label from a few columns (k-sparse probing on SAE latents) or
from a whole vector (a concept probe on the SAE's input). :func:`fit_logistic` fits a
batch of independent problems together by Newton's method, vectorised over the batch: a
dozen Newton steps reach the optimum where gradient descent would take hundreds. A
problem with few inputs solves its small Hessian directly; problems sharing one wide
input (a 512-d vector) are fitted on its principal components and solve each step by
conjugate gradients (preconditioned by the Hessian's diagonal) from Hessian-vector
products, never forming the Hessians. Each step is shortened when a shorter one lowers
the loss more (a few step sizes tried at once), so a nearly separable problem does not
overshoot.

Probes are scored the way the project scores detectors: the threshold is the one with
the best F1 on the rows the probe was fitted on (:func:`best_f1_threshold`), and the F1
reported is that threshold's on held-out rows (:func:`f1_at`).
"""

from __future__ import annotations

import numpy as np

L2 = 1e-3  # weight decay on the mean loss (the bias is not decayed)
NEWTON_STEPS = 12
STEP_SIZES = (1.0, 0.5, 0.25, 0.1)  # tried at every Newton step; the best is taken
OUTER_BUDGET = 1 << 24  # floats of row outer products: above, Newton steps go by CG
CG_STEPS = 12  # conjugate-gradient steps per Newton step (wide shared inputs)


def _mean_loss(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean binary cross-entropy over the last axis, from the logits (stable for any z)."""
    z = z.astype(np.float64)
    return np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))), axis=-1)


def _products(x1: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(..., B, n)`` logits of ``x1 (B, n, d + 1)`` (or ``(1, n, d + 1)``, shared) and
    weights ``w (..., B, d + 1)``."""
    w = w.astype(np.float32)
    if x1.shape[0] == 1:  # one matrix product for every problem and step size
        return (w.reshape(-1, w.shape[-1]) @ x1[0].T).reshape(*w.shape[:-1], -1)
    return np.matmul(x1, w[..., None])[..., 0]


class _Outer:
    """Every row's outer product ``x_i x_i^T`` of a shared ``x (n, d)``, flattened: the
    Hessians of all problems are then one matrix product, ``curvature (B, n) @ outer (n,
    d * d)``. Only for inputs small enough (:func:`_fits_outer`)."""

    def __init__(self, x: np.ndarray):
        self.d = x.shape[1]
        self.whole = (x[:, :, None] * x[:, None, :]).reshape(len(x), -1)

    def weighted_sum(self, weights: np.ndarray) -> np.ndarray:
        """``(B, d, d)``: ``sum_i weights[b, i] x_i x_i^T``."""
        return (weights @ self.whole).reshape(-1, self.d, self.d)


def _fits_outer(n: int, d: int) -> bool:
    return n * d * d <= OUTER_BUDGET


def _conjugate_gradient(hvp, g: np.ndarray, scale: np.ndarray, steps: int) -> np.ndarray:
    """Solve ``H d = g`` for every row of ``g (B, d)`` by conjugate gradients preconditioned
    with ``H``'s diagonal ``scale (B, d)``; ``hvp(v)`` gives ``H v`` for a ``(B, d)`` batch
    (``H`` symmetric positive definite). A row whose residual vanishes stops moving."""
    out = np.zeros_like(g)
    r = g.copy()
    z = r / scale
    direction = z.copy()
    rz = np.sum(r * z, axis=1)
    for _ in range(steps):
        hd = hvp(direction)
        curvature = np.sum(direction * hd, axis=1)
        alpha = np.divide(rz, curvature, out=np.zeros_like(rz), where=curvature > 0)
        out += alpha[:, None] * direction
        r -= alpha[:, None] * hd
        z = r / scale
        rz_next = np.sum(r * z, axis=1)
        beta = np.divide(rz_next, rz, out=np.zeros_like(rz), where=rz > 0)
        direction = z + beta[:, None] * direction
        rz = rz_next
    return out


def _principal_axes(x: np.ndarray) -> np.ndarray:
    """``(d, d)`` orthonormal axes of ``x (n, d)``'s principal components. In their
    coordinates the logistic Hessian is nearly diagonal, so a diagonal preconditioner
    serves conjugate gradients well; a rotation leaves the weights' decay unchanged."""
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    if vt.shape[0] < x.shape[1]:  # fewer rows than columns: complete the basis
        q, _ = np.linalg.qr(np.concatenate([vt.T, np.eye(x.shape[1])], axis=1))
        return q[:, :x.shape[1]].astype(np.float32)
    return vt.T.astype(np.float32)


def fit_logistic(x, y, *, l2: float = L2, steps: int = NEWTON_STEPS) -> np.ndarray:
    """One logistic regression per problem: ``x (B, n, d)`` (or ``(n, d)``, shared by every
    problem) and labels ``y (B, n)`` bool -> ``(B, d + 1)`` float32 weights, the bias last.
    Columns should be on comparable scales (standardise them): the decay treats all alike.
    A column of zeros keeps a zero weight. Plain numpy: nothing to compile, and each
    problem is small enough that its Hessian costs little."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32)
    if y.ndim != 2 or x.ndim not in (2, 3) or x.shape[-2] != y.shape[1]:
        raise ValueError(f"x {x.shape} and y {y.shape} do not match: x must be (B, n, d) "
                         "or (n, d), y (B, n)")
    b, n = y.shape
    shared = x.ndim == 2
    x = x[None] if shared else x
    # Wide shared inputs are fitted on their principal components, then rotated back.
    axes = (_principal_axes(x[0]) if shared and not _fits_outer(n, x.shape[2] + 1)
            else None)
    if axes is not None:
        x = x @ axes
    x1 = np.concatenate([x, np.ones((*x.shape[:2], 1), np.float32)], axis=2)
    d1 = x1.shape[2]
    reg = np.full(d1, l2, np.float64)
    reg[-1] = 0.0
    sizes = np.asarray(STEP_SIZES)
    w = np.zeros((b, d1))

    def loss(w_all):  # (..., B, d + 1) -> (..., B)
        return _mean_loss(_products(x1, w_all), y) + 0.5 * np.sum(reg * w_all**2, axis=-1)

    current = loss(w)
    # Shared inputs: the Hessians from the rows' outer products when those fit, else
    # Newton steps solved by conjugate gradients from Hessian-vector products.
    outer = _Outer(x1[0]) if shared and _fits_outer(n, d1) else None
    damping = reg + 1e-6
    for _ in range(steps):
        z = _products(x1, w)
        p = 1.0 / (1.0 + np.exp(-z))
        curvature = p * (1 - p)
        if shared:
            grad = (p - y) @ x1[0] / n
        else:
            grad = np.matmul((p - y)[:, None], x1)[:, 0] / n
        grad = grad.astype(np.float64) + reg * w
        if shared and outer is None:
            def hvp(v, c=curvature):
                return (((v.astype(np.float32) @ x1[0].T) * c) @ x1[0] / n + damping * v)

            diagonal = curvature @ (x1[0] * x1[0]) / n + damping
            direction = _conjugate_gradient(hvp, grad, diagonal, CG_STEPS)
        else:
            hess = (outer.weighted_sum(curvature) if shared else np.matmul(
                (curvature[:, :, None] * x1).transpose(0, 2, 1), x1))
            hess = hess.astype(np.float64) / n + np.diag(damping)
            direction = np.linalg.solve(hess, grad[..., None])[..., 0]
        tried = w[None] - sizes[:, None, None] * direction[None]  # (S, B, d + 1)
        losses = loss(tried)
        pick = np.argmin(losses, axis=0)
        best = losses[pick, np.arange(b)]
        # Keep w where every step raises the loss beyond float32 rounding (near the
        # optimum the loss no longer resolves the step, and the Newton step is the right one).
        better = best <= current + 1e-6 * np.abs(current)
        w = np.where(better[:, None], tried[pick, np.arange(b)], w)
        current = np.where(better, best, current)
    if axes is not None:
        w = np.concatenate([w[:, :-1] @ axes.T, w[:, -1:]], axis=1)
    return w.astype(np.float32)


def logits(x, weights) -> np.ndarray:
    """``x (B, n, d)`` or shared ``(n, d)`` with :func:`fit_logistic`'s ``(B, d + 1)``
    weights -> ``(B, n)`` logits."""
    x = np.asarray(x, np.float32)
    w = np.asarray(weights, np.float32)
    if x.ndim == 2:
        return (x @ w[:, :-1].T).T + w[:, -1:]
    return np.einsum("bnd,bd->bn", x, w[:, :-1]) + w[:, -1:]


def best_f1_threshold(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``scores (B, n)`` with ``labels (B, n)`` bool: the threshold with the best
    F1 when predicting ``score >= threshold`` (the candidates are the distinct scores; of
    equal F1s the highest threshold) and that F1, ``(B,)`` each. A row without positives
    gets F1 0 and a threshold above every score."""
    scores = np.asarray(scores, np.float32)
    labels = np.asarray(labels, bool)
    b, n = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=1)
    tp = np.cumsum(np.take_along_axis(labels, order, axis=1), axis=1)
    positives = labels.sum(1, keepdims=True)
    f1 = 2.0 * tp / (np.arange(1, n + 1)[None] + positives)
    # A cut between two equal scores is not a threshold.
    is_cut = np.concatenate([ranked[:, :-1] > ranked[:, 1:], np.ones((b, 1), bool)], axis=1)
    f1 = np.where(is_cut, f1, -1.0)
    best = np.argmax(f1, axis=1)
    rows = np.arange(b)
    threshold = ranked[rows, best]
    none = positives[:, 0] == 0
    threshold = np.where(none, np.inf, threshold).astype(np.float32)
    return threshold, np.where(none, 0.0, f1[rows, best])


def f1_at(scores, labels, threshold) -> np.ndarray:
    """``(B,)`` F1 of predicting ``scores (B, n) >= threshold (B,)`` against ``labels``."""
    predicted = np.asarray(scores) >= np.asarray(threshold)[:, None]
    labels = np.asarray(labels, bool)
    hits = (predicted & labels).sum(1)
    return 2.0 * hits / np.maximum(predicted.sum(1) + labels.sum(1), 1)
