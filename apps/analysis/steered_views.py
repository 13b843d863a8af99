"""Steering shown as builds, for the report: what a feature does to a whole legal build.

For each of the first few feature cards, the feature's top-activating build is cut to
its partial form (its three mains kept, its nine subs hidden) and the model completes
it three times with the same legal beam search: as is, with the feature set to 0, and
with the feature set to its maximum over the analyzed builds (the SAE spliced in with
its reconstruction error kept, so only the edit differs). The three builds are lined up
slot by slot (:func:`bridge.steered_completion.diff_builds`).
"""

from __future__ import annotations

import numpy as np

from bridge.steered_completion import diff_builds, steered_logits_fn
from primary.allocator import allocate
from primary.completion import complete_build, prefers_fixed_width
from primary.vocab import ABILITIES, MAIN_AP
from runkit.progress import show_progress

STEERED_FEATURES = 8  # cards that get steered builds (each costs three completions)
BEAM_SIZE = 4


def mains_only(ap_row: np.ndarray) -> dict[str, int]:
    """The partial form of a full build: only its main slots (10 AP each)."""
    allocation = allocate(np.asarray(ap_row, np.int64))
    if not allocation:
        raise ValueError(f"not a legal build: {allocation.reason}")
    observed: dict[str, int] = {}
    for m in allocation.mains:
        if m >= 0:
            observed[ABILITIES[m]] = observed.get(ABILITIES[m], 0) + MAIN_AP
    return observed


def steered_build_rows(primary, sae, vocab, weapon_vocab, weapon: int, observed: dict,
                       feature: int, high: float) -> list[dict]:
    """Slot rows ``{"slot", "before", "zero", "max", "changed_zero", "changed_max"}`` of the
    three completions (``changed_*``: 1 where that edit changed the slot). Input shapes as
    :func:`primary.completion.prefers_fixed_width` says (the workbench's build lab uses the
    same, so its pages and the lab share compilations)."""
    fixed = prefers_fixed_width(primary)

    def complete(logits_fn=None):
        return complete_build(primary, vocab, weapon_vocab, weapon, observed,
                              beam_size=BEAM_SIZE, logits_fn=logits_fn, fixed_width=fixed).best

    before = complete()
    zero = diff_builds(before, complete(steered_logits_fn(primary, sae, feature, 0.0)))
    top = diff_builds(before, complete(steered_logits_fn(primary, sae, feature, high)))
    return [{"slot": f"{z.piece} {z.slot}", "before": z.before, "zero": z.after,
             "max": m.after, "changed_zero": int(z.changed), "changed_max": int(m.changed)}
            for z, m in zip(zero.slots, top.slots)]


def add_steered_builds(pages: list[dict], builds, primary, sae, vocab, weapon_vocab, *,
                       max_features: int = STEERED_FEATURES) -> None:
    """Attach ``steered_builds`` to the first ``max_features`` ranked pages (in place)."""
    chosen = [p for p in pages if p.get("rank") is not None and p["top_examples"]]
    for page in show_progress(chosen[:max_features], desc="steered builds", unit="feature",
                              leave=False):
        example = page["top_examples"][0]
        row = example["row"]
        observed = mains_only(builds.ap[row])
        rows = steered_build_rows(primary, sae, vocab, weapon_vocab, int(builds.weapons[row]),
                                  observed, page["id"], page["max_act"])
        page["steered_builds"] = [{"who": f"{example['weapon']}, mains kept", "rows": rows,
                                   "observed": observed}]
