"""Feature absorption and splitting: how an SAE carries binary concepts it was never told.

After SAEBench's absorption metric (Chanin et al., "A is for Absorption"), for concepts
given as label columns over the rows an SAE encoded (at most the first ``MAX_ROWS``).
For each concept ``c``:

1. **Probe.** A logistic regression on the SAE's input (standardised) predicts ``c``;
   it is fitted on the even rows, its threshold is the best-F1 one there, and its F1 is
   measured on the odd rows (held out). Its weights, taken back to the input's own
   coordinates and scaled to unit length, are the probe direction ``p``.
2. **Main latents and splits (k-sparse probing).** Latents are ranked by their mean
   activation on the positives minus on the negatives (even rows). A logistic probe on
   the top ``k`` latents' activations is fitted (even rows) and scored (odd rows);
   starting from ``k = 1``, ``k`` grows (up to ``MAX_K``) while the next probe gains at
   least ``SPLIT_F1_GAIN`` F1. The top ``k`` latents are the concept's *main latents*,
   and ``k > 1`` means the concept is *split* across them.
3. **Absorption.** On the held-out positives that the probe calls positive (the input
   carries the concept), each firing latent ``j`` takes ``a_j cos(d_j, p)`` of the
   probe's projection (``d_j`` its unit decoder atom), out of the input's own projection
   from the SAE's origin, ``s = (x - b_dec) . p`` (rows with ``s <= 0`` carry no
   projection to share and are left out, and counted). These rows are the *checked*
   ones. *Absorbing latents* are the non-main latents
   with ``cos(d_j, p) >= ABSORBER_COS`` and a positive share; the ``MAX_ABSORBERS``
   largest of them together take ``t``; the main latents take ``m``. A row's absorption
   fraction is 0 when ``m >= s`` or ``t < ABSORBED_SHARE * s``, 1 when ``m <= 0``, and
   otherwise ``a / (a + m)`` with ``a = min(t, s - m)``. A row is *fully absorbed* when
   every main latent is silent (zero) and the single latent with the largest share has
   ``cos >= FULL_COS`` and takes at least ``ABSORBED_SHARE * s``.

Per concept: the probe F1, the k-sparse F1s, the main latents, whether it splits, the
mean absorption fraction and the fully absorbed share of the checked rows, the share
where all main latents are silent, and the latents that absorb it most often (the one
with the largest share on each row with a positive fraction; each listed with the
concepts it is a main latent of). A concept is measured when each half holds at least
``MIN_ROWS`` positives and negatives and its probe reaches ``MIN_PROBE_F1``: a concept the
input barely encodes cannot be absorbed. The summary averages the measured concepts.

Where this differs from SAEBench: projections are measured from the decoder bias, not
from zero (the input has a large common offset no latent carries); probes are
L2-regularised logistic regressions fitted by Newton's method, thresholded at their best
F1 on the fitting rows (SAEBench: L1-decayed probes trained by gradient steps, threshold
0.5); a gain of exactly ``SPLIT_F1_GAIN`` counts as a split (SAEBench: more than it); the
rows are split even / odd rather than by word lists; and the concepts are
one-against-the-rest labels given by the caller rather than 26-way first letters.

Work is vectorised (:mod:`sae_jax.logistic_probe`): the probes of all concepts together,
the k-sparse probes of one ``k`` for every concept still growing together, one sparse
product for the mean differences, and per concept one pass over the entries of its
checked rows.
"""

from __future__ import annotations

import os

import numpy as np

from runkit.jsonio import write_json
from sae_jax.logistic_probe import best_f1_threshold, f1_at, fit_logistic, logits
from sae_jax.sparse_activations import SparseActivations

MAX_K = 10  # the largest k-sparse probe
SPLIT_F1_GAIN = 0.03  # one more latent is a split when its probe gains this much F1
MIN_ROWS = 20  # positives and negatives each half must hold for a concept to be measured
MIN_PROBE_F1 = 0.6  # below this the input barely encodes the concept
ABSORBER_COS = 0.1  # an absorbing latent's decoder must point this much along the probe
MAX_ABSORBERS = 3  # how many absorbing latents together may take a row's projection
ABSORBED_SHARE = 0.4  # the share of the input's projection that counts as absorbed
FULL_COS = 0.025  # full absorption: the top latent's least cosine with the probe
TOP_ABSORBERS = 3  # absorbing latents listed per concept
MAX_ROWS = 4000  # rows measured: the first ones (the analysis builds are in random order)


def first_rows(sparse: SparseActivations, m: int) -> SparseActivations:
    """The activations of rows ``0 .. m - 1`` alone (each feature's entries in order)."""
    if m >= sparse.num_rows:
        return sparse
    keep = sparse.rows < m
    feat = sparse.feature_of_entries(0, sparse.nnz)[keep]
    counts = np.bincount(feat, minlength=sparse.num_features)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return SparseActivations(m, indptr, sparse.rows[keep], sparse.values[keep])


def _halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows to fit on (even) and to score on (odd)."""
    rows = np.arange(n)
    return rows % 2 == 0, rows % 2 == 1


def _standardise(x: np.ndarray, fit: np.ndarray, axis: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x`` centred and scaled by the fitting rows' mean and spread along ``axis`` (rows),
    with that mean and spread; a constant column becomes 0."""
    mean = x.compress(fit, axis=axis).mean(axis=axis, keepdims=True)
    sd = x.compress(fit, axis=axis).std(axis=axis, keepdims=True)
    return np.where(sd > 1e-8, (x - mean) / np.where(sd > 1e-8, sd, 1.0), 0.0), mean, sd


def input_probes(pooled: np.ndarray, labels: np.ndarray, fit: np.ndarray, held: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One logistic probe per label column on the standardised input: ``(held-out F1 (C,),
    unit directions (C, D) in the input's coordinates, calls (n, C) bool)`` (a call: the
    probe says positive)."""
    x, _, sd = _standardise(np.asarray(pooled, np.float32), fit, axis=0)
    y = np.ascontiguousarray(labels.T)  # (C, n)
    w = fit_logistic(x[fit], y[:, fit])
    z = logits(x, w)
    threshold, _ = best_f1_threshold(z[:, fit], y[:, fit])
    f1 = f1_at(z[:, held], y[:, held], threshold)
    # Standardised weights back to the input's coordinates: w_j / sd_j.
    raw = w[:, :-1] / np.where(sd > 1e-8, sd, np.inf)
    directions = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
    return f1, directions.astype(np.float32), (z >= threshold[:, None]).T


def mean_differences(sparse: SparseActivations, labels: np.ndarray, rows: np.ndarray
                     ) -> np.ndarray:
    """``(F, C)``: each latent's mean activation on the positives minus on the negatives
    of each label column, over ``rows`` (a bool mask)."""
    from scipy import sparse as scipy_sparse  # a dependency of jax

    h = scipy_sparse.csc_matrix((sparse.values, sparse.rows, sparse.indptr),
                                shape=(sparse.num_rows, sparse.num_features))
    pos = (labels & rows[:, None]).astype(np.float32)
    neg = (~labels & rows[:, None]).astype(np.float32)
    pos_mean = np.asarray(h.T @ pos) / np.maximum(pos.sum(0), 1)
    neg_mean = np.asarray(h.T @ neg) / np.maximum(neg.sum(0), 1)
    return pos_mean - neg_mean


def _level_f1(columns: np.ndarray, labels: np.ndarray, fit: np.ndarray, held: np.ndarray
              ) -> np.ndarray:
    """``(B,)`` held-out F1 of a logistic probe per problem on ``columns (B, n, k)``
    (standardised on the fitting rows) for ``labels (B, n)``."""
    x, _, _ = _standardise(columns, fit, axis=1)
    w = fit_logistic(x[:, fit], labels[:, fit])
    scores = logits(x, w)
    threshold, _ = best_f1_threshold(scores[:, fit], labels[:, fit])
    return f1_at(scores[:, held], labels[:, held], threshold)


def k_sparse_probing(sparse: SparseActivations, top: np.ndarray, labels: np.ndarray,
                     fit: np.ndarray, held: np.ndarray, gain: float = SPLIT_F1_GAIN
                     ) -> tuple[np.ndarray, np.ndarray]:
    """k-sparse probes on the latents ``top (C, K)`` of each label column, best first:
    ``(held-out F1 (C, K), main latents per concept (C,))``. The probe on the first ``k``
    latents is fitted only while ``k`` still grows: ``k`` starts at 1 and grows while the
    next probe gains at least ``gain`` F1 (F1s never fitted are NaN)."""
    num, k_max = top.shape
    union, where = np.unique(top, return_inverse=True)
    columns = sparse.dense(union)  # (n, U): only the latents some probe reads
    where = where.reshape(num, k_max)
    labels_t = np.ascontiguousarray(labels.T)
    f1 = np.full((num, k_max), np.nan)
    count = np.ones(num, np.int64)
    growing = np.arange(num)
    for k in range(1, k_max + 1):
        if not len(growing):
            break
        f1[growing, k - 1] = _level_f1(columns[:, where[growing, :k]].transpose(1, 0, 2),
                                       labels_t[growing], fit, held)
        if k > 1:
            grew = f1[growing, k - 1] - f1[growing, k - 2] >= gain - 1e-9
            growing = growing[grew]
            count[growing] = k
    return f1, count


class _RowEntries:
    """The sparse activations by row (compressed sparse rows), for per-row sums."""

    def __init__(self, sparse: SparseActivations):
        feat = sparse.feature_of_entries(0, sparse.nnz)
        order = np.argsort(sparse.rows, kind="stable")
        self.features = feat[order]
        self.values = sparse.values[order]
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(sparse.rows,
                                                                 minlength=sparse.num_rows))])

    def of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(position in rows, feature, value)`` of every entry of ``rows``."""
        start, stop = self.indptr[rows], self.indptr[rows + 1]
        lengths = stop - start
        owner = np.repeat(np.arange(len(rows)), lengths)
        index = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        index += np.repeat(start, lengths)
        return owner, self.features[index], self.values[index]


def _ranks_within(owner: np.ndarray, share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entries ordered by owner then by descending share, and each one's rank (0 the
    largest) among its owner's."""
    order = np.lexsort((-share, owner))
    owners = owner[order]
    first = np.concatenate([[True], owners[1:] != owners[:-1]])
    start = np.maximum.accumulate(np.where(first, np.arange(len(owners)), 0))
    return order, np.arange(len(owners)) - start


def row_absorption(entries: _RowEntries, rows: np.ndarray, projection: np.ndarray,
                   cos: np.ndarray, mains: np.ndarray) -> dict:
    """Absorption on ``rows`` for one concept: ``projection (len(rows),)`` the input's
    probe projection ``s`` (> 0), ``cos (F,)`` each latent's decoder cosine with the
    probe, ``mains`` its main latents. Returns per row ``fraction``, ``full`` (bool),
    ``silent`` (all mains zero) and ``absorber`` (the largest absorbing latent, -1 none)."""
    m = len(rows)
    owner, feat, value = entries.of(rows)
    share = value * cos[feat]
    is_main = np.isin(feat, mains)
    main_share = np.bincount(owner, share * is_main, minlength=m)
    silent = np.bincount(owner, is_main, minlength=m) == 0
    candidate = ~is_main & (cos[feat] >= ABSORBER_COS) & (share > 0)
    c_owner, c_share, c_feat = owner[candidate], share[candidate], feat[candidate]
    order, rank = _ranks_within(c_owner, c_share)
    kept = order[rank < MAX_ABSORBERS]
    taken = np.bincount(c_owner[kept], c_share[kept], minlength=m)
    absorber = np.full(m, -1, np.int64)
    top = order[rank == 0]
    absorber[c_owner[top]] = c_feat[top]
    a = np.minimum(taken, projection - main_share)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(main_share <= 0, 1.0, a / (a + main_share))
    fraction = np.where((main_share >= projection) | (taken < ABSORBED_SHARE * projection),
                        0.0, np.clip(fraction, 0.0, 1.0))
    # Full absorption: the one latent with the largest share, mains silent.
    order_all, rank_all = _ranks_within(owner, share)
    best = order_all[rank_all == 0]
    full = np.zeros(m, bool)
    full[owner[best]] = ((cos[feat[best]] >= FULL_COS)
                         & (share[best] >= ABSORBED_SHARE * projection[owner[best]]))
    return {"fraction": fraction, "full": full & silent, "silent": silent,
            "absorber": np.where(fraction > 0, absorber, -1)}


def _list_absorbers(rows: list[dict], measured: dict, cos: np.ndarray) -> tuple[int, int]:
    """Each probed concept's most frequent top absorbers into its row (``measured``: row
    index -> (probe index, per checked row its top absorber or -1); ``cos (F, E)``).
    Returns the measured concepts' absorbed rows and how many of them a main latent of
    another concept of the same family absorbs."""
    main_of: dict[int, list[int]] = {}
    for j in measured:
        for f in rows[j]["main_latents"]:
            main_of.setdefault(f, []).append(j)
    absorbed_rows = in_family = 0
    for j, (e, absorber) in measured.items():
        hit = absorber[absorber >= 0]
        ids, times = np.unique(hit, return_counts=True)
        rows[j]["absorbers"] = [
            {"feature": int(ids[i]), "rows": int(times[i]), "cos": float(cos[ids[i], e]),
             "main_of": [rows[o]["concept"] for o in main_of.get(int(ids[i]), []) if o != j]}
            for i in np.lexsort((ids, -times))[:TOP_ABSORBERS]]
        if rows[j]["status"] == "measured":
            absorbed_rows += len(hit)
            family = rows[j]["family"]
            in_family += sum(int(t) for f, t in zip(ids, times)
                             if any(rows[o]["family"] == family and o != j
                                    for o in main_of.get(int(f), [])))
    return absorbed_rows, in_family


def absorption(pooled, sparse: SparseActivations, atoms, b_dec, labels, names, *,
               texts=None, families=None, max_k: int = MAX_K) -> dict:
    """Absorption and splitting of every label column (see the module docstring).

    ``pooled (n, D)``: the SAE's inputs; ``sparse``: their activations; ``atoms (F, D)``:
    the unit decoder atoms; ``b_dec (D,)``; ``labels (n, C)`` bool; ``names``: a name per
    column, ``texts`` how people read it (default the names), ``families`` a group per
    column (concepts of one hierarchy: the summary counts absorbers that are main latents
    of another concept of the same family). Returns the ``absorption.json`` document:
    ``{"concepts": [...], "summary": {...}, "settings": {...}}``."""
    pooled = np.asarray(pooled, np.float32)
    labels = np.asarray(labels, bool)
    total, num = labels.shape
    texts = list(names) if texts is None else list(texts)
    families = list(names) if families is None else list(families)
    if not (len(names) == len(texts) == len(families) == num):
        raise ValueError(f"{num} label columns for {len(names)} names, {len(texts)} texts "
                         f"and {len(families)} families")
    if sparse.num_rows != total or len(pooled) != total:
        raise ValueError(f"rows differ: pooled {pooled.shape}, activations "
                         f"{sparse.num_rows} rows, labels {labels.shape}")
    # The probes' cost grows with the rows; a few thousand measure every rung well.
    n = min(total, MAX_ROWS)
    pooled, labels, sparse = pooled[:n], labels[:n], first_rows(sparse, n)
    atoms = np.asarray(atoms, np.float32)
    fit, held = _halves(n)
    rows = []
    for j in range(num):
        rows.append({"concept": names[j], "text": texts[j], "family": families[j],
                     "positives": int(labels[:, j].sum()), "status": "few builds"})
    counts = np.stack([(labels & fit[:, None]).sum(0), (~labels & fit[:, None]).sum(0),
                       (labels & held[:, None]).sum(0), (~labels & held[:, None]).sum(0)])
    enough = np.flatnonzero(counts.min(0) >= MIN_ROWS)
    k_max = int(min(max_k, sparse.num_features))
    if len(enough) and k_max > 0:
        y = labels[:, enough]
        probe_f1, directions, calls = input_probes(pooled, y, fit, held)
        diff = mean_differences(sparse, y, fit)
        top = np.argsort(-diff, axis=0, kind="stable")[:k_max].T  # (E, K)
        ksparse, mains_count = k_sparse_probing(sparse, top, y, fit, held)
        cos = atoms @ directions.T  # (F, E): atoms are unit rows
        projection = (pooled - np.asarray(b_dec, np.float32)) @ directions.T  # (n, E)
        entries = _RowEntries(sparse)
        measured = {}
        for e, j in enumerate(enough):
            row = rows[j]
            mains = top[e, :mains_count[e]]
            row.update({
                "status": "measured" if probe_f1[e] >= MIN_PROBE_F1 else "weak probe",
                "probe_f1": float(probe_f1[e]),
                "ksparse_f1": [float(v) for v in ksparse[e] if not np.isnan(v)],
                "main_latents": [int(f) for f in mains],
                "main_f1": float(ksparse[e, mains_count[e] - 1]),
                "main_cos": [float(cos[f, e]) for f in mains],
                "split": bool(mains_count[e] > 1)})
            called = held & y[:, e] & calls[:, e]
            checked = np.flatnonzero(called & (projection[:, e] > 0))
            result = row_absorption(entries, checked, projection[checked, e], cos[:, e],
                                    mains)
            row["checked"] = int(len(checked))
            row["left_out"] = int(called.sum()) - len(checked)  # no projection to share
            if len(checked):
                row["mains_silent"] = float(result["silent"].mean())
                row["absorption_fraction"] = float(result["fraction"].mean())
                row["full_absorption"] = float(result["full"].mean())
            else:
                row["mains_silent"] = row["absorption_fraction"] = row["full_absorption"] = None
            measured[j] = (e, result["absorber"])
        absorbed_rows, in_family = _list_absorbers(rows, measured, cos)
    else:
        absorbed_rows = in_family = 0
    return {"concepts": rows, "summary": summary_of(rows, absorbed_rows, in_family),
            "settings": {"max_k": k_max, "split_f1_gain": SPLIT_F1_GAIN,
                         "min_rows": MIN_ROWS, "min_probe_f1": MIN_PROBE_F1,
                         "absorber_cos": ABSORBER_COS, "max_absorbers": MAX_ABSORBERS,
                         "absorbed_share": ABSORBED_SHARE, "full_cos": FULL_COS,
                         "num_rows": int(n), "of_rows": int(total)}}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summary_of(rows: list[dict], absorbed_rows: int = 0, in_family: int = 0) -> dict:
    """The run's numbers over the measured concepts: how many, the mean probe and main F1,
    the share split, the mean absorption fraction and fully absorbed share, the share of
    absorbed rows whose top absorber is a main latent of another concept of the same
    family (None without absorbed rows), and the share of the probe-recognised held-out
    positives left out for a projection that is not positive."""
    done = [r for r in rows if r["status"] == "measured"]
    return {
        "concepts": len(rows), "measured": len(done),
        "few_builds": sum(r["status"] == "few builds" for r in rows),
        "weak_probe": sum(r["status"] == "weak probe" for r in rows),
        "mean_probe_f1": _mean(r["probe_f1"] for r in done),
        "mean_main_f1": _mean(r["main_f1"] for r in done),
        "split_share": _mean(float(r["split"]) for r in done),
        "mean_main_latents": _mean(len(r["main_latents"]) for r in done),
        "mean_absorption_fraction": _mean(r["absorption_fraction"] for r in done),
        "mean_full_absorption": _mean(r["full_absorption"] for r in done),
        "family_absorber_share": in_family / absorbed_rows if absorbed_rows else None,
        "left_out_share": (sum(r["left_out"] for r in done)
                           / max(sum(r["left_out"] + r["checked"] for r in done), 1)
                           if done else None),
    }


def absorption_roles(doc: dict | None, feature: int) -> dict | None:
    """What ``feature`` is in the ``absorption.json`` document ``doc``: ``{"main": [...],
    "absorbs": [...]}`` (the measured concepts it is a main latent of, with the other main
    latents and its top absorbers; the concepts it absorbs, with on how many of their
    checked rows), or None when it is neither."""
    if not doc:
        return None
    main, absorbs = [], []
    for r in doc.get("concepts", []):
        if r.get("status") != "measured":
            continue
        if feature in r["main_latents"]:
            main.append({"concept": r["concept"], "text": r["text"], "f1": r["main_f1"],
                         "split_with": [f for f in r["main_latents"] if f != feature],
                         "absorption_fraction": r["absorption_fraction"],
                         "full_absorption": r["full_absorption"],
                         "absorbed_by": [a["feature"] for a in r.get("absorbers", [])]})
        for a in r.get("absorbers", []):
            if a["feature"] == feature:
                absorbs.append({"concept": r["concept"], "text": r["text"],
                                "rows": a["rows"], "checked": r["checked"]})
    return {"main": main, "absorbs": absorbs} if main or absorbs else None


def write_absorption(path: str | os.PathLike, doc: dict) -> None:
    write_json(path, doc)
