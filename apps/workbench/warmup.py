"""What the workbench computes at startup, before it answers feature and lab requests.

Every first use of a jitted program compiles it (seconds each on a CPU; the persistent
compilation cache, :mod:`runkit.compile_cache`, makes a restart read them from disk
instead). :func:`warm_up` runs each kind of request once: the list's table, a plain and
two steered completions with the lab's forward pass, one feature page computed from scratch
(steering tables, steered builds, co-activations, activation bands) and one feature's
rung curves (a run on activation files: the table and a feature page); so the first
request a person makes finds its programs compiled. A lab
request completes its plain and its steered build in one call of two, so that size is
compiled too; when the server batches lab requests
(:mod:`apps.workbench.completion_batcher`), every padded size of
:data:`apps.workbench.lab.BATCH_SIZES` is, so that no batch compiles under load. Each size
is compiled plain and with edits (one or two, padded to two: the count most requests need).
"""

from __future__ import annotations

import time

import numpy as np

from apps.workbench.feature_list import FeatureTable
from apps.workbench.lab import (
    BATCH_SIZES,
    complete_lab,
    lab_choices,
    lab_completions,
    lab_request,
)
from apps.workbench.run_state import RunData
from sae_jax.activity import live_mask


def warm_features(run: RunData) -> tuple[int | None, int | None]:
    """``(page, curves)``: the most frequent live feature whose page the static report
    does not hold (its page computes everything; else the most frequent live one), and the
    most frequent live one without stored rung curves (None where there is none)."""
    freq = run.index()["frequency"]
    live = [int(f) for f in np.argsort(-freq, kind="stable") if live_mask(freq)[f]]
    if not live:
        return None, None
    in_report = {p["id"] for p in run.report_doc().get("pages", [])}
    page = next((f for f in live if f not in in_report), live[0])
    curves = next((f for f in live if not (run.explanation(f) or {}).get("rung_curves")), None)
    return page, curves


def warm_up(run: RunData, table: FeatureTable, *, batched: bool = False) -> dict[str, float]:
    """Compile and load what the pages need; returns the seconds of each step. ``batched``:
    lab requests are batched (compile every batch size)."""
    seconds: dict[str, float] = {}

    def step(name: str, fn, *args):
        t0 = time.perf_counter()
        fn(*args)
        seconds[name] = round(time.perf_counter() - t0, 2)

    step("feature table", table.ensure)
    page, curves = warm_features(run)
    if run.on_activations:  # no primary model: no completions, no rung curves
        if page is not None:
            step("feature page", run.feature_page, page)
        return seconds
    weapon = lab_choices(run)["weapons"][0]["id"]
    plain = {"weapon": weapon, "abilities": {}}  # what the lab asks for first
    step("completion", lambda: complete_lab(run, lab_request(plain, run)))
    # The lab's forward pass compiles per number of edits (a completion per padded count,
    # lab.EDIT_SIZES): one ("set to 0" on a feature, the feature pages' links) and two;
    # more compile on first use.
    for n in (1, 2):
        edits = [{"feature": f, "value": 0.0} for f in range(min(n, run.num_features))]
        step(f"steered completion, {n} edit{'s' if n > 1 else ''}",
             lambda e=edits: complete_lab(run, lab_request(dict(plain, edits=e), run)))
    reqs = [lab_request(dict(plain, edits=[{"feature": 0, "value": 0.0}][:n]), run)
            for n in (0, 1)]
    for size in BATCH_SIZES[1:] if batched else BATCH_SIZES[1:2]:
        step(f"batched completions, {size} builds",
             lambda s=size: [lab_completions(run, [q] * s) for q in reqs])
    if page is not None:
        step("feature page", run.feature_page, page)
    if curves is not None:
        step("rung curves", run.rung_curves, curves)
    return seconds
