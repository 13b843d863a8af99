"""What the workbench knows about one SAE run, loaded lazily and cached.

A run directory holds ``run.json`` (naming the primary model), ``sae/`` and, when
``python -m apps.analyze`` has run, ``explanations.json``, ``concepts.json`` and
``report/features.json``. :class:`RunData` opens nothing at construction (the server
starts at once); the models load on first use, and the per-feature index (frequency,
score, top activating builds and histogram of every feature over the run's analysis
builds) is computed once, saved beside the run as ``workbench/index.npz`` and paged
through afterwards, so a 24,576-feature SAE lists as fast as a small one.

A run trained on activation files is an :class:`ActivationRunData` (:func:`open_run` picks
the class): what applies without a primary model.

Feature pages are built for any feature id from the index, the SAE's logit influence and
steering tables, steered completions, co-activations, the features that fire together
with it (:mod:`apps.workbench.cofiring`) and examples from each band of its activations
(:mod:`apps.workbench.activation_bands`) computed on demand (a bounded number of pages
cached in memory); when the static report shows the feature, its steering
tables, concept, co-activations and steered builds are taken from ``report/features.json``;
the AP rungs it is a main latent of or absorbs from ``absorption.json``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from apps.analysis.report import token_label
from apps.workbench.activation_bands import activation_bands
from apps.workbench.cofiring import fires_together
from runkit.run_dir import RunDir, RunDirError
from sae_jax.absorption import absorption_roles
from sae_jax.activity import is_active, live_mask, window_mask
from sae_jax.feature_labels import (
    CATEGORIES,
    LabelError,
    labels_to_json,
    read_labels,
    remove_label,
    set_label,
)
from sae_jax.pair_recovery import pair_memberships

TOP_EXAMPLES = 8
HIST_BINS = 30
INFLUENCE_TOKENS = 8
LIST_TOKENS = 4  # promoted tokens the list shows and searches per feature
INDEX_VERSION = 2
PAGE_CACHE = 64  # feature pages kept in memory
CURVE_BUILDS = 128  # builds averaged per rung (as the analysis does)
COMPLETION_CACHE = 64  # plain completions kept (a steered one is compared with its plain one)
ANALYZE_HINT = "run python -m apps.analyze --workdir={workdir}"


class RunError(ValueError):
    """A run directory the workbench cannot serve (the message says what is missing)."""


class RunData:
    """One run directory. Thread-safe: model work runs under :attr:`lock`."""

    def __init__(self, workdir, *, num_builds: int | None = None):
        self.rundir = RunDir(workdir)
        self.workdir = self.rundir.root
        try:
            self.run = self.rundir.read_run()
            self.sae_config = self.rundir.sae_config()
            self._check_inputs()
        except RunDirError as e:
            raise RunError(str(e)) from None
        self.num_builds = num_builds
        self.lock = threading.RLock()
        self._index_lock = threading.Lock()
        self._num_features = None
        self._models = None
        self._split = None
        self._builds = None
        self._index = None
        self._influence = None
        self._sparse = None
        self._active_counts = None
        self._pages: OrderedDict[int, dict] = OrderedDict()
        self._curves: dict[int, dict] = {}
        self._rung_edits = None
        self.completions: OrderedDict[tuple, object] = OrderedDict()
        self._explanations = None
        self._report = None

    on_activations = False  # trained on activation files: no primary model (ActivationRunData)

    def _check_inputs(self) -> None:
        self.primary_dir = self.rundir.primary_dir(self.run)  # a path check, no loading

    # ------------------------------------------------------------------ files

    @property
    def name(self) -> str:
        return self.workdir.name

    @property
    def architecture(self) -> str:
        return str(self.sae_config.get("architecture", "relu_l1"))

    @property
    def num_features(self) -> int:
        from sae_jax.model import SAEConfig

        if self._num_features is None:
            self._num_features = SAEConfig(**self.sae_config).hidden_dim
        return self._num_features

    def analyze_hint(self) -> str:
        return ANALYZE_HINT.format(workdir=self.workdir)

    def explanations(self) -> dict:
        """``explanations.json`` ({} when the run has not been analyzed)."""
        if self._explanations is None:
            self._explanations = self.rundir.explanations() or {}
        return self._explanations

    def report_doc(self) -> dict:
        """``report/features.json`` (the static report's pages; {} when absent)."""
        if self._report is None:
            self._report = self.rundir.report_features()
        return self._report

    def concepts(self) -> dict | None:
        return self.rundir.concepts()

    def labels(self) -> dict[str, dict]:
        return labels_to_json(read_labels(self.rundir.labels_path,
                                          num_features=self.num_features))

    def missing(self) -> list[str]:
        """What the run lacks that some parts of the pages show, with how to get it."""
        out = []
        if not self.rundir.explanations_path.is_file():
            out.append(f"explanations, class breakdowns and rung curves: {self.analyze_hint()}")
        if not self.rundir.report_features_path.is_file():
            out.append(f"the static report's steering tables: {self.analyze_hint()}")
        return out

    # ------------------------------------------------------------------ models and builds

    def models(self):
        """``(primary, vocab, weapon_vocab, sae)``, loaded on first use."""
        with self.lock:
            if self._models is None:
                from primary.model_dir import load_primary
                from sae_jax.sae_dir import load_sae

                primary_dir = self.primary_dir
                primary, vocab, weapon_vocab = load_primary(primary_dir)
                sae = load_sae(self.rundir.sae_dir)
                if sae.config.input_dim != primary.config.hidden_dim:
                    raise RunError(f"{self.rundir.sae_dir} takes {sae.config.input_dim}-d inputs "
                                   f"but the primary model in {primary_dir} pools to "
                                   f"{primary.config.hidden_dim}")
                self._models = (primary, vocab, weapon_vocab, sae)
            return self._models

    def split_primary(self):
        """``nnx.split`` of the primary model, made once (the model never changes here)."""
        with self.lock:
            if self._split is None:
                from flax import nnx

                self._split = nnx.split(self.models()[0])
            return self._split

    def builds(self):
        """``(builds, pooled (n, D))``: the run's analysis builds (the held-out split, as
        ``apps.analysis.pipeline`` makes it) and their pooled vectors."""
        with self.lock:
            if self._builds is None:
                from apps.analysis.pipeline import evaluation_builds, known_builds
                from bridge.harvest import pooled_of_inputs
                from primary.build_inputs import full_build_inputs

                primary, vocab, weapon_vocab, _ = self.models()
                builds = known_builds(evaluation_builds(self.workdir, vocab, weapon_vocab,
                                                        limit=self.num_builds),
                                      vocab, weapon_vocab)
                inputs = full_build_inputs(builds, vocab, weapon_vocab,
                                           where=f"{self.workdir} analysis builds")
                self._builds = (builds, pooled_of_inputs(primary, inputs))
            return self._builds

    def influence(self) -> np.ndarray:
        """``(F, V)`` logit influence of each unit feature (decoder atom through the
        output layer)."""
        with self.lock:
            if self._influence is None:
                from sae_jax.feature_stats import logit_influence

                primary, _, _, sae = self.models()
                self._influence = np.asarray(logit_influence(
                    sae.atoms(), primary.output_layer.kernel[...]), np.float32)
            return self._influence

    def activations(self):
        """The SAE's positive activations on the analysis builds, sorted by value
        (:class:`~sae_jax.sparse_activations.SparseActivations`: memory in proportion to
        the active entries): the index and the co-activations are read from them."""
        with self.lock:
            if self._sparse is None:
                from apps.analysis.pipeline import sae_activations
                from sae_jax.sparse_activations import collect

                _, pooled = self.builds()
                sae = self.models()[3]
                self._sparse = collect(sae_activations(sae, pooled), sae.hidden_dim,
                                       total_rows=len(pooled)).sort_by_value()
            return self._sparse

    def active_counts(self) -> np.ndarray:
        """``(F,)`` analysis builds each feature is active on."""
        with self.lock:
            if self._active_counts is None:
                sparse = self.activations()
                running = np.concatenate([[0], np.cumsum(is_active(sparse.values))])
                self._active_counts = running[sparse.indptr[1:]] - running[sparse.indptr[:-1]]
            return self._active_counts

    def top_build_start(self, feature: int) -> tuple[int, dict[str, int]] | None:
        """``(weapon game id, {ability: AP})``: the mains of the feature's strongest build,
        where the build lab starts when the feature is set (None: it never fires)."""
        from apps.analysis.steered_views import mains_only

        feature = self.check_feature(feature)
        idx = self.index()
        row, value = int(idx["top_rows"][feature][0]), float(idx["top_values"][feature][0])
        if row < 0 or value <= 0:
            return None
        builds, _ = self.builds()
        return int(builds.weapons[row]), mains_only(builds.ap[row])

    # ------------------------------------------------------------------ the index

    def _index_path(self) -> Path:
        return self.rundir.workbench_dir / "index.npz"

    def _fingerprint(self) -> str:
        params = self.rundir.sae_dir / "params"
        stamp = max((p.stat().st_mtime_ns for p in params.rglob("*") if p.is_file()),
                    default=0) if params.exists() else 0
        return f"v{INDEX_VERSION}:{stamp}:{self.num_builds}"

    def index(self) -> dict:
        """Per-feature arrays over the analysis builds (see the module docstring); read from
        ``workbench/index.npz`` when it matches this SAE, else computed and saved."""
        with self._index_lock:  # not the model lock: a saved index needs no model
            if self._index is None:
                self._index = self._load_index() or self._build_index()
            return self._index

    def _load_index(self) -> dict | None:
        path = self._index_path()
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError):
            return None
        if str(data.get("fingerprint", "")) != self._fingerprint():
            return None
        return data

    def _build_index(self) -> dict:
        from sae_jax import feature_stats as analysis
        _, _, _, sae = self.models()
        _, pooled = self.builds()
        sparse = self.activations()
        # The histograms end where the static report's do: the clip, or the largest activation.
        hist_max = analysis.histogram_max(sae.config.encoder.clip_max, sparse)
        stats = analysis.stats_from_sparse(sparse, top_k=TOP_EXAMPLES,
                                           hist_edges=analysis.histogram_edges(HIST_BINS,
                                                                               hist_max))
        summary = analysis.summarize(stats)
        data = {"top_tokens": self._top_tokens(),
                "frequency": summary.frequency, "mean_when_active": summary.mean_when_active,
                "score": summary.score, "max_act": summary.max_act,
                "top_rows": np.asarray(stats.top_rows), "top_values": np.asarray(stats.top_values),
                "hist": np.asarray(stats.hist), "num_builds": np.int64(len(pooled)),
                "hist_edges": analysis.histogram_edges(HIST_BINS, hist_max),
                "fingerprint": np.array(self._fingerprint())}
        try:  # a read-only run directory still serves, from memory
            self._index_path().parent.mkdir(exist_ok=True)
            tmp = self._index_path().with_suffix(".tmp.npz")
            np.savez(tmp, **data)
            tmp.replace(self._index_path())
        except OSError:
            pass
        return data

    def _top_tokens(self) -> np.ndarray:
        """``(F, LIST_TOKENS)``: each feature's most promoted tokens (the list shows them)."""
        _, vocab, _, _ = self.models()
        top = np.argsort(-self.influence(), axis=1)[:, :LIST_TOKENS]
        return np.array(vocab.id_to_token, dtype=str)[top]

    def ranked(self) -> np.ndarray:
        """Feature ids in the 1%-30% window, by score (the report's ranking)."""
        idx = self.index()
        keep = np.flatnonzero(window_mask(idx["frequency"]))
        return keep[np.lexsort((keep, -idx["score"][keep]))]

    # ------------------------------------------------------------------ one feature

    def check_feature(self, feature: int) -> int:
        if not 0 <= feature < self.num_features:
            raise LookupError(f"feature {feature} is out of range: the SAE has "
                              f"{self.num_features} features (0..{self.num_features - 1})")
        return feature

    def explanation(self, feature: int) -> dict | None:
        return (self.explanations().get("features") or {}).get(str(feature))

    def feature_page(self, feature: int) -> dict:
        """The analysis page of ``feature`` (the document the report's card shows)."""
        feature = self.check_feature(feature)
        self.index()  # first, outside the model lock (building the index takes both)
        with self.lock:
            if feature in self._pages:
                self._pages.move_to_end(feature)
                return self._pages[feature]
            page = self._compute_page(feature)
            self._pages[feature] = page
            while len(self._pages) > PAGE_CACHE:
                self._pages.popitem(last=False)
            return page

    def _report_page(self, feature: int) -> dict | None:
        for p in self.report_doc().get("pages", []):
            if p["id"] == feature:
                return p
        return None

    def _compute_page(self, feature: int) -> dict:
        from apps.analysis.pipeline import _describe_build, steering_tables
        from apps.analysis.steered_views import mains_only, steered_build_rows
        from sae_jax.feature_stats import coactivation_counts, coactive_features

        idx = self.index()
        builds, _ = self.builds()
        primary, vocab, weapon_vocab, sae = self.models()
        ranked = self.ranked()
        rank = np.flatnonzero(ranked == feature)
        f = feature
        def example(r, v) -> dict:
            return dict(_describe_build(builds, int(r)), row=int(r), activation=float(v),
                        weapon_id=int(builds.weapons[int(r)]))

        examples = [example(r, v) for r, v in zip(idx["top_rows"][f], idx["top_values"][f])
                    if r >= 0 and v > 0]
        sparse = self.activations()
        a, b = sparse.indptr[f], sparse.indptr[f + 1]
        bands = [dict(band, examples=[example(r, v) for r, v in band["examples"]])
                 for band in activation_bands(sparse.rows[a:b], sparse.values[a:b])]
        infl = self.influence()[f]
        order = np.argsort(-infl, kind="stable")
        promoted = [(vocab.id_to_token[int(t)], float(infl[t])) for t in order[:INFLUENCE_TOKENS]
                    if infl[t] > 0]
        suppressed = [(vocab.id_to_token[int(t)], float(infl[t]))
                      for t in order[::-1][:INFLUENCE_TOKENS] if infl[t] < 0]
        concepts = self.concepts()
        page = {"id": f, "rank": int(rank[0]) + 1 if len(rank) else None,
                "score": float(idx["score"][f]), "frequency": float(idx["frequency"][f]),
                "mean_when_active": float(idx["mean_when_active"][f]),
                "max_act": float(idx["max_act"][f]), "hist": idx["hist"][f].tolist(),
                "top_examples": examples, "promoted": promoted, "suppressed": suppressed,
                "steering": [], "concept": self._concept_of(f), "coactive": [],
                "steered_builds": [], "bands": bands,
                "pairs": pair_memberships(concepts).get(f, []) if concepts else [],
                "absorption": absorption_roles(self.rundir.absorption(), f)}
        report = self._report_page(f)
        if report is not None:  # the report computed these over the same builds
            for key in ("steering", "concept", "coactive", "steered_builds"):
                if report.get(key):
                    page[key] = report[key]
        if not page["steering"] and examples:
            _, pooled = self.builds()
            page["steering"] = steering_tables(
                primary, sae, vocab, pooled, [f], idx["top_rows"], idx["top_values"],
                idx["max_act"])[f]
        counts = coactivation_counts(sparse, [f])[0]
        if not page["coactive"]:
            live = live_mask(idx["frequency"])
            page["coactive"] = coactive_features(counts, f, live)
        page["fires_together"] = fires_together(counts, self.active_counts(), f)
        if not page["steered_builds"] and examples:
            row = examples[0]["row"]
            observed = mains_only(builds.ap[row])
            rows = steered_build_rows(primary, sae, vocab, weapon_vocab,
                                      int(builds.weapons[row]), observed, f, page["max_act"])
            page["steered_builds"] = [{"who": f"{examples[0]['weapon']}, mains kept",
                                       "rows": rows, "observed": observed}]
        return page

    def rung_curves(self, feature: int) -> dict:
        """``{ability: {"ap", "mean", "n"}}``: the feature's mean activation as each ability
        steps through its AP rungs (``bridge.causal.rung_curves``, on a seeded sample of
        the analysis builds, as the analysis makes them for the report's features)."""
        feature = self.check_feature(feature)
        expl = self.explanation(feature)
        if expl and expl.get("rung_curves"):
            return expl["rung_curves"]
        with self.lock:
            if feature not in self._curves:
                from bridge.causal import curves_of

                self._curves[feature] = curves_of(self.models()[3], self.rung_edits(),
                                                  [feature])[feature]
            return self._curves[feature]

    def rung_edits(self):
        """The sample's builds at every rung of every ability, pooled
        (``bridge.causal.rung_edits``): the same for every feature, so made once; a
        feature's curves are then one SAE encoding of them."""
        with self.lock:
            if self._rung_edits is None:
                from bridge.causal import rung_edits

                builds, _ = self.builds()
                primary, vocab, weapon_vocab, _ = self.models()
                rng = np.random.default_rng(0)
                sample = np.sort(rng.choice(len(builds), min(CURVE_BUILDS, len(builds)),
                                            replace=False))
                self._rung_edits = rung_edits(primary, vocab, weapon_vocab,
                                              builds.subset(sample))
            return self._rung_edits

    def _concept_of(self, feature: int) -> dict | None:
        """The planted concept this feature is the best detector of (concepts.json)."""
        concepts = self.concepts()
        for r in (concepts or {}).get("rows", []):
            if r.get("feature") == feature:
                return {"name": r["concept"], "f1": float(r["sae_f1"]),
                        "auroc": float(r.get("sae_auroc", 0.5)), "best_detector": True}
        return None

    # ------------------------------------------------------------------ labels

    def set_label(self, feature: int, name, category=None, notes=None) -> dict:
        self.check_feature(feature)
        for field, value in (("name", name), ("category", category), ("notes", notes)):
            if value is not None and not isinstance(value, str):
                raise LabelError(f"label field {field!r} must be a string, got "
                                 f"{json.dumps(value)[:40]}")
        if category is not None and category not in CATEGORIES:
            raise LabelError(f"unknown label category {category!r}; categories: "
                             f"{', '.join(CATEGORIES)}")
        with self.lock:
            label = set_label(self.rundir.labels_path, feature, name if name is not None else "",
                              category=category, notes=notes, num_features=self.num_features)
        return label.to_json()

    def remove_label(self, feature: int) -> dict:
        self.check_feature(feature)
        with self.lock:
            return remove_label(self.rundir.labels_path, feature,
                                num_features=self.num_features).to_json()


class ActivationRunData(RunData):
    """A run trained on activation files (``--activations``): no primary model, so no
    builds, tokens, steering, build lab or rung curves. Its analysis rows are the run's
    held-out rows (:mod:`apps.analysis.activation_analysis`); a feature's page shows its
    statistics, its top rows and rows from each band of its activations by their index in
    the files, and the features it fires with."""

    on_activations = True

    def _check_inputs(self) -> None:
        self.primary_dir = None
        self.activations_path = self.rundir.activations_path(self.run)  # a path check

    def missing(self) -> list[str]:
        return []  # explanations and steering need the primary model: nothing to compute

    def no_primary(self, what: str) -> LookupError:
        return LookupError(f"{what} needs a primary model; this run trained on the "
                           f"activations in {self.activations_path}")

    def models(self):
        """``(None, None, None, sae)``: the SAE alone."""
        with self.lock:
            if self._models is None:
                from sae_jax.sae_dir import load_sae

                self._models = (None, None, None, load_sae(self.rundir.sae_dir))
            return self._models

    def builds(self):
        """``(rows, pooled (n, D))``: the analysis rows
        (:class:`~apps.analysis.activation_analysis.RowAnalysisInputs`) and their
        activations."""
        with self.lock:
            if self._builds is None:
                from apps.analysis.activation_analysis import analysis_rows

                rows = analysis_rows(self.workdir, num_rows=self.num_builds)
                if rows.files.d_in != self.models()[3].config.input_dim:
                    raise RunError(f"{self.rundir.sae_dir} takes "
                                   f"{self.models()[3].config.input_dim}-d inputs but the "
                                   f"activations in {rows.files.path} have {rows.files.d_in}")
                self._builds = (rows, rows.pooled)
            return self._builds

    def influence(self) -> np.ndarray:
        raise self.no_primary("the features' token influence")

    def _top_tokens(self) -> np.ndarray:
        return np.zeros((self.num_features, 0), dtype=str)

    def top_build_start(self, feature: int):
        self.check_feature(feature)
        return None

    def rung_curves(self, feature: int) -> dict:
        self.check_feature(feature)
        raise self.no_primary("AP rung curves")

    def rung_edits(self):
        raise self.no_primary("AP rung curves")

    def example(self, r: int, v: float) -> dict:
        """Analysis row ``r`` with activation ``v``, named by its place in the files."""
        rows, _ = self.builds()
        table_row = int(rows.rows[r])
        return {"row": int(r), "table_row": table_row, "where": rows.files.where(table_row),
                "activation": float(v)}

    def _compute_page(self, feature: int) -> dict:
        from sae_jax.feature_stats import coactivation_counts, coactive_features

        idx, f = self.index(), feature
        ranked = self.ranked()
        rank = np.flatnonzero(ranked == f)
        examples = [self.example(r, v) for r, v in zip(idx["top_rows"][f], idx["top_values"][f])
                    if r >= 0 and v > 0]
        sparse = self.activations()
        a, b = sparse.indptr[f], sparse.indptr[f + 1]
        bands = [dict(band, examples=[self.example(r, v) for r, v in band["examples"]])
                 for band in activation_bands(sparse.rows[a:b], sparse.values[a:b])]
        counts = coactivation_counts(sparse, [f])[0]
        return {"id": f, "rank": int(rank[0]) + 1 if len(rank) else None,
                "score": float(idx["score"][f]), "frequency": float(idx["frequency"][f]),
                "mean_when_active": float(idx["mean_when_active"][f]),
                "max_act": float(idx["max_act"][f]), "hist": idx["hist"][f].tolist(),
                "top_examples": examples, "promoted": [], "suppressed": [], "steering": [],
                "concept": None, "coactive": coactive_features(counts, f,
                                                               live_mask(idx["frequency"])),
                "steered_builds": [], "bands": bands, "pairs": [], "on_rows": True,
                "fires_together": fires_together(counts, self.active_counts(), f)}


def open_run(workdir, *, num_builds: int | None = None) -> RunData:
    """The workbench's view of the run in ``workdir``: :class:`ActivationRunData` for a run
    on activation files, else :class:`RunData`."""
    try:
        on_activations = RunDir(workdir).read_run().on_activations
    except RunDirError as e:
        raise RunError(str(e)) from None
    return (ActivationRunData if on_activations else RunData)(workdir, num_builds=num_builds)


def search_text(feature: int, expl: dict | None, label: dict | None, tokens, concept) -> str:
    """What the list's search matches: id, explanation, label, top tokens, concept."""
    parts = [f"f{feature}", str(feature)]
    if expl:
        parts += [expl.get("rule_text", ""), expl.get("sentence", "")]
    if label:
        parts += [label.get("name", ""), label.get("notes", ""), label.get("category", "")]
    parts += [token_label(t) + " " + t for t in tokens]
    if concept:
        parts.append(concept)
    return " ".join(p for p in parts if p).lower()
