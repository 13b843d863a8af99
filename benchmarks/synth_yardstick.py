"""A SynthSAEBench-style yardstick in JAX: a world of known sparse features with a hierarchy
and correlated firing, our SAEs trained on it, and scored against the true features.

The world (:class:`World`, generated on the device, no torch needed):

- ``num_features`` true feature directions in ``d_in`` dimensions (random unit vectors);
- a hierarchy of ``roots`` trees, each a root and ``num_features / roots - 1`` children,
  mutually exclusive: a child fires only while its root fires, and then at most one child
  of that root (the one a Zipf-weighted draw picks, or none with ``child_none``);
- roots fire with Zipf-distributed probabilities scaled so that the mean number of active
  true features per sample is ``target_l0``, correlated through a Gaussian copula of rank
  ``correlation_rank`` (a share ``correlation_scale`` of each root's latent variance is
  shared);
- a firing feature's magnitude is ``|1 + magnitude_std * N(0, 1)|``.

The 16k configuration (:data:`SYNTH_16K`) has SynthSAEBench's published sizes (16,384 true
features in 768 dimensions, 128 roots x 128 branches, mutually exclusive, L0 25); the
generator is ours, so its figures sit beside the published table as a like-for-like
recipe on a world of the same shape, not on the same samples.

Scores (:func:`score`), on fresh samples whose true features are known:

- ``explained_variance`` (FVE), ``l0``, ``dead`` (latents that never fire);
- ``mcc``: the mean |cosine| between matched pairs of a one-to-one matching of latents'
  decoder atoms and true directions that maximises the total (each latent's 8 nearest true
  directions as candidates; a sparse minimum-weight full matching);
- ``f1``: per latent, F1 of its firing against the firing of its nearest true feature
  (by decoder cosine), averaged over latents (a dead latent scores 0);
- ``features_recovered``: the share of true features that some latent detects with
  F1 >= 0.8 (our concept-recovery criterion, applied to true features).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

CANDIDATES = 8  # nearest true directions per latent considered by the matching
RECOVERED_F1 = 0.8
GEN_CHUNK = 8192  # samples generated at once (their true activations: 8192 x num_features)


@dataclass(frozen=True)
class World:
    num_features: int = 16_384
    d_in: int = 768
    roots: int = 128
    target_l0: float = 25.0
    zipf_exponent: float = 1.0
    child_none: float = 0.1  # chance that a firing root fires none of its children
    correlation_rank: int = 16
    correlation_scale: float = 0.3
    magnitude_std: float = 0.15
    seed: int = 0

    def __post_init__(self):
        if self.num_features % self.roots or self.num_features // self.roots < 2:
            raise ValueError(f"{self.num_features} features do not split into {self.roots} "
                             "trees of a root and at least one child")
        if not 0 < self.target_l0 < 2 * self.roots * (1 - self.child_none / 2):
            raise ValueError(f"target_l0 {self.target_l0} is out of reach of {self.roots} "
                             "trees (each adds at most a root and one child)")

    @property
    def branches(self) -> int:
        return self.num_features // self.roots - 1


SYNTH_16K = World()


def _zipf(n: int, exponent: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** exponent
    return w / w.sum()


class WorldTables(NamedTuple):
    """The world's fixed parts, on the device (a pytree: jitted functions take it)."""
    directions: jax.Array  # (num_features, d_in): roots first, then each root's children
    root_threshold: jax.Array  # (roots,): a root fires when its copula variable is below
    child_logits: jax.Array  # (branches + 1,): the draw among children, "none" last
    loadings: jax.Array  # (correlation_rank, roots)

    @property
    def roots(self) -> int:
        return self.root_threshold.shape[0]


def make_tables(world: World) -> WorldTables:
    rng = np.random.default_rng(world.seed)
    directions = rng.standard_normal((world.num_features, world.d_in)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    # Mean active features = sum over roots of p_root * (1 + (1 - child_none)).
    per_root = 2.0 - world.child_none
    p_root = _zipf(world.roots, world.zipf_exponent) * world.target_l0 / per_root
    if p_root.max() >= 1:
        # The most frequent roots saturate: flatten the Zipf tail until they fit.
        p_root = np.full(world.roots, world.target_l0 / per_root / world.roots)
    children = _zipf(world.branches, world.zipf_exponent) * (1 - world.child_none)
    logits = np.log(np.concatenate([children, [world.child_none]]))
    loadings = rng.standard_normal((world.correlation_rank, world.roots))
    loadings /= np.linalg.norm(loadings, axis=0, keepdims=True)
    from scipy.special import ndtri

    return WorldTables(jnp.asarray(directions), jnp.asarray(ndtri(p_root), jnp.float32),
                       jnp.asarray(logits, jnp.float32), jnp.asarray(loadings, jnp.float32))


def feature_index(roots: int, branches: int, root: jax.Array, child: jax.Array) -> jax.Array:
    """Index of ``child`` (0-based) of ``root`` among all features (roots come first)."""
    return roots + root * branches + child


@partial(jax.jit, static_argnames=("rows", "correlation_scale", "magnitude_std"))
def sample(tables: WorldTables, key: jax.Array, rows: int, *, correlation_scale: float,
           magnitude_std: float) -> tuple[jax.Array, jax.Array]:
    """``(x, acts)``: ``rows`` samples (rows, d_in) and their true activations
    (rows, num_features)."""
    k_shared, k_own, k_child, k_mag = jax.random.split(key, 4)
    roots = tables.roots
    branches = (tables.directions.shape[0] - roots) // roots
    shared = jax.random.normal(k_shared, (rows, tables.loadings.shape[0])) @ tables.loadings
    own = jax.random.normal(k_own, (rows, roots))
    u = jnp.sqrt(correlation_scale) * shared + jnp.sqrt(1 - correlation_scale) * own
    root_on = u < tables.root_threshold
    pick = jax.random.categorical(k_child, tables.child_logits, shape=(rows, roots))
    child_on = root_on & (pick < branches)
    mags = jnp.abs(1 + magnitude_std * jax.random.normal(k_mag, (rows, roots, 2)))
    acts = jnp.zeros((rows, tables.directions.shape[0]), jnp.float32)
    acts = acts.at[:, :roots].set(jnp.where(root_on, mags[..., 0], 0.0))
    child_idx = feature_index(roots, branches, jnp.arange(roots)[None, :],
                              jnp.minimum(pick, branches - 1))
    acts = acts.at[jnp.arange(rows)[:, None], child_idx].set(
        jnp.where(child_on, mags[..., 1], 0.0))
    return acts @ tables.directions, acts


@partial(jax.jit, static_argnames=("rows", "chunk", "correlation_scale", "magnitude_std"))
def sample_inputs(tables: WorldTables, key: jax.Array, rows: int, *, chunk: int,
                  correlation_scale: float, magnitude_std: float) -> jax.Array:
    """``rows`` samples (rows, d_in), made ``chunk`` at a time so that the true activations
    (chunk x num_features) never exist for all rows at once."""
    def one(k):
        return sample(tables, k, chunk, correlation_scale=correlation_scale,
                      magnitude_std=magnitude_std)[0]

    keys = jax.random.split(key, rows // chunk)
    return jax.lax.map(one, keys).reshape(rows, -1)


# --------------------------------------------------------------------------- scoring


def _matched_mcc(cos: np.ndarray) -> float:
    """Mean |cosine| of the best one-to-one matching of latents to true directions (rows
    to columns), searched among each latent's CANDIDATES nearest directions."""
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    sim = np.abs(cos)
    n_lat, n_true = sim.shape
    if n_lat * n_true <= 4096 * 4096 and n_lat <= n_true:
        rows, cols = linear_sum_assignment(-sim)
        return float(sim[rows, cols].mean())
    top = np.argpartition(-sim, CANDIDATES, axis=1)[:, :CANDIDATES]
    weights = np.take_along_axis(sim, top, axis=1)
    graph = csr_matrix((2.0 - weights.ravel(), top.ravel(),
                        np.arange(0, n_lat * CANDIDATES + 1, CANDIDATES)), shape=sim.shape)
    try:
        rows = np.arange(n_lat)
        cols = min_weight_full_bipartite_matching(graph)
    except ValueError:  # no full matching among the candidates: greedy on them instead
        order = np.argsort(-weights, axis=None)
        used_r, used_c, total = set(), set(), []
        for flat in order:
            r, j = divmod(int(flat), CANDIDATES)
            c = int(top[r, j])
            if r not in used_r and c not in used_c:
                used_r.add(r)
                used_c.add(c)
                total.append(sim[r, c])
        return float(np.sum(total) / n_lat)
    return float(sim[rows, cols].mean())


@jax.jit
def _firing_counts(h_on: jax.Array, true_on: jax.Array) -> tuple[jax.Array, ...]:
    """Co-firing counts (latents x true features) and each side's firing count."""
    both = h_on.astype(jnp.float32).T @ true_on.astype(jnp.float32)
    return both, h_on.sum(0), true_on.sum(0)


def score(params: dict, sae_config, tables: WorldTables, world: World, *, rows: int,
          key: jax.Array, chunk: int = 8192) -> dict:
    """The SAE (``params``, an :class:`~sae_jax.model.SAEConfig`) scored on ``rows`` fresh
    samples of the world (see the module docstring)."""
    from sae_jax.model import decode, encode, unit_rows

    d_sae = params["W_enc"].shape[1]
    both = jnp.zeros((d_sae, world.num_features))
    lat_count = jnp.zeros(d_sae)
    true_count = jnp.zeros(world.num_features)
    sq_err = total_sq = 0.0
    l0 = 0.0
    sums = jnp.zeros(world.d_in)
    sq_sums = jnp.zeros(world.d_in)
    for i, start in enumerate(range(0, rows, chunk)):
        n = min(chunk, rows - start)
        x, acts = sample(tables, jax.random.fold_in(key, i), n,
                         correlation_scale=world.correlation_scale,
                         magnitude_std=world.magnitude_std)
        _, h = encode(params, x, sae_config)
        recon = decode(params, h)
        sq_err += float(jnp.sum((recon - x) ** 2))
        sums, sq_sums = sums + x.sum(0), sq_sums + (x ** 2).sum(0)
        l0 += float((h > 0).sum())
        b, lc, tc = _firing_counts(h > 0, acts > 0)
        both, lat_count, true_count = both + b, lat_count + lc, true_count + tc
    total_sq = float(jnp.sum(sq_sums - sums ** 2 / rows))
    both, lat_count, true_count = (np.asarray(a, np.float64) for a in (both, lat_count,
                                                                        true_count))
    # F1 of latent i against true feature j: 2 * both / (fires_i + fires_j).
    f1 = 2 * both / np.maximum(lat_count[:, None] + true_count[None, :], 1)
    cos = np.asarray(unit_rows(params["W_dec"]) @ tables.directions.T)
    nearest = np.argmax(np.abs(cos), axis=1)
    latent_f1 = f1[np.arange(d_sae), nearest]
    return {
        "explained_variance": 1 - sq_err / total_sq,
        "l0": l0 / rows,
        "dead": int((lat_count == 0).sum()),
        "mcc": _matched_mcc(cos),
        "f1": float(latent_f1.mean()),
        "features_recovered": float((f1.max(0) >= RECOVERED_F1).mean()),
        "true_l0": float(true_count.sum() / rows),
        "eval_rows": rows,
    }


# --------------------------------------------------------------------------- training


def train_config(arch: str, world: World, width: int, *, k: int, batch: int, lr: float,
                 fill_rows: int, total_steps: int, seed: int):
    """Our recipe for ``arch`` at this width: the architecture's required settings
    (Matryoshka's nested groups), AuxK on, no resampling, constant learning rate."""
    from sae_jax.architectures import get_architecture
    from sae_jax.config import SAETrainConfig

    base = dict(architecture=arch, k=k, expansion_factor=width / world.d_in, lr=lr,
                sae_batch_size=batch, buffer_size=fill_rows, min_buffer=batch,
                resample_steps=(), seed=seed, dead_after_rows=min(4 * fill_rows, 10_000_000))
    cfg = SAETrainConfig(**base, **{k_: v for k_, v in get_architecture(arch)
                                    .required_settings(width).items() if k_ not in base})
    cfg.validate(total_sae_steps=total_steps, d_sae=width)
    return cfg


def train(arch: str, world: World, tables: WorldTables, *, width: int, k: int, samples: int,
          batch: int, fill_rows: int, steps_per_call: int, lr: float, seed: int,
          progress=None) -> tuple[dict, object, dict]:
    """``(params, sae_config, timing)``: an SAE trained on ``samples`` samples, drawn fresh in
    fills of ``fill_rows`` (each fill is sampled ``fill_rows / batch`` times over)."""
    from sae_jax.buffer import ActivationBuffer
    from sae_jax.model import create_sae
    from sae_jax.step import init_train_state, make_train_steps

    gen_chunk = min(GEN_CHUNK, fill_rows)
    fill_rows -= fill_rows % gen_chunk
    steps_per_fill = max(fill_rows // batch, 1)
    steps_per_call = min(steps_per_call, steps_per_fill)
    steps_per_fill -= steps_per_fill % steps_per_call
    total_steps = max(samples // batch // steps_per_fill, 1) * steps_per_fill
    cfg = train_config(arch, world, width, k=k, batch=batch, lr=lr, fill_rows=fill_rows,
                       total_steps=total_steps, seed=seed)
    sae_config = cfg.sae_config(world.d_in)
    state = init_train_state(create_sae(sae_config, seed=seed), cfg, total_steps)
    run = make_train_steps(cfg, total_steps, steps_per_call)
    key = jax.random.key(seed)
    gen_s = train_s = 0.0
    for fill in range(total_steps // steps_per_fill):
        t0 = time.perf_counter()
        x = sample_inputs(tables, jax.random.fold_in(key, 10_000_000 + fill), fill_rows,
                          chunk=gen_chunk, correlation_scale=world.correlation_scale,
                          magnitude_std=world.magnitude_std)
        buf = ActivationBuffer(jax.block_until_ready(x), jnp.zeros((), jnp.int32),
                               jnp.asarray(fill_rows, jnp.int32))
        t1 = time.perf_counter()
        for _ in range(steps_per_fill // steps_per_call):
            state, metrics = run(state, buf, jax.random.fold_in(key, fill))
        jax.block_until_ready(state)
        gen_s, train_s = gen_s + t1 - t0, train_s + time.perf_counter() - t1
        if progress is not None:
            progress(fill + 1, total_steps // steps_per_fill)
    if not bool(metrics["finite"]):
        raise FloatingPointError(f"{arch} training diverged")
    timing = {"steps": total_steps, "samples": total_steps * batch, "generate_s": gen_s,
              "train_s_incl_compile": train_s,
              "samples_per_s": total_steps * batch / train_s}
    return jax.device_get(state.params), sae_config, timing


def run_yardstick(world: World, *, archs, width: int, k: int, samples: int, batch: int,
                  fill_rows: int, steps_per_call: int, lr: float, eval_rows: int,
                  seeds=(0,), log=print) -> dict:
    """Each architecture trained and scored per seed on the same world."""
    tables = make_tables(world)
    out = {"world": dataclasses.asdict(world), "width": width, "k": k, "samples": samples,
           "batch": batch, "fill_rows": fill_rows, "lr": lr, "eval_rows": eval_rows,
           "architectures": {}}
    for arch in archs:
        runs = []
        for seed in seeds:
            log(f"yardstick: {arch}, seed {seed}: {samples:,} samples, {world.num_features:,} "
                f"true features in {world.d_in} dims, width {width:,}, k {k}")
            params, sae_config, timing = train(
                arch, world, tables, width=width, k=k, samples=samples, batch=batch,
                fill_rows=fill_rows, steps_per_call=steps_per_call, lr=lr, seed=seed)
            scores = score(params, sae_config, tables, world, rows=eval_rows,
                           key=jax.random.key(99_999))
            runs.append({"seed": seed, **timing, **scores})
        keys = ("f1", "mcc", "explained_variance", "l0", "features_recovered", "dead")
        out["architectures"][arch] = {
            "runs": runs,
            "mean": {k_: float(np.mean([r[k_] for r in runs])) for k_ in keys},
            "spread": {k_: float(np.ptp([r[k_] for r in runs])) for k_ in keys}}
    return out
