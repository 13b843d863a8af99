"""How well completion recovers hidden slots of held-out builds.

    python -m primary.eval_completion --primary_dir=DIR [--protocol=ours|splatnlp]
        [--data_source=synthetic|statink|splatnlp_tsv --data_path=...] [--num_builds=2000]
        [--beam_size=N] [--out=DIR]

Held-out builds: where the primary's training settings sit beside its model
directory (``<primary_dir>/../train_config.json``, as ``primary.train`` writes
them) and no ``--data_source`` is given, the builds are made exactly as that
training made them and its test split is used (``primary.training.prepare_data``:
same source, count and seed; :func:`primary.splits.data_splits`). Otherwise (an imported model, or
another source) the builds of ``--data_source`` are split 70/10/20 with
``--seed`` and the test part is used. Only full legal 57-AP builds of weapons
the model knows are scored (the others are counted as skipped). Token-only data
(``splatnlp_tsv``) gives each ability an AP range, not its AP: each build is
rebuilt as a legal full build inside those ranges (:func:`full_build_in_ranges`),
so its hidden slots are one reading of the tokens, not necessarily the player's.

Each build's 12 slot items (3 mains, 9 subs; its unique zero-overshoot
allocation) are listed; for k = 1..6, k of them are hidden at random (seeded
by (seed, k)) and the rest observed as minimum AP. Three completers fill the
build: ``random`` (the observed allocated, every empty slot an ability drawn
uniformly among those the slot may hold), ``baseline`` (the same beam search
as the model, driven by the weapon-conditional token frequencies of the
training part: input-independent logits ``log p / (1 - p)``) and ``model``.

Matching (``completion_slot_acc``): a slot item is the pair (slot kind: main
or sub, ability). Items are compared as multisets, positions ignored (which
piece a sub sits on carries no meaning). For a completed build P, observed
items O and hidden items H, the recovered count is ``|(P - O) & H|``
(multiset difference and intersection): the items of P not accounted for by
what was observed that match a hidden item. ``completion_slot_acc`` = total
recovered / total hidden. Every completion is checked independently
(``check_slots_legal``, ``check_ap_legal`` of its slots, observed AP kept);
the count of failures is reported as ``illegal``.

Two protocols, on the same hidden slots (``protocol`` in the JSON says which made it):

- ``ours`` (the default): the completers get the exact observed AP and the top-1 build is
  scored (``completion_slot_acc``).
- ``splatnlp``: SplatNLP's Sendou evaluation. The beam completers get only the observed
  ability tokens, i.e. each observed ability at its highest token's minimum AP
  (:func:`context_input`: 13 AP observed is a minimum of 12); random, as SplatNLP's random
  baseline, keeps the observed slot items. Beam 3 unless ``--beam_size`` says otherwise.
  Matching is the same (O is still the observed slot items); scored are the top-1 build
  (``completion_slot_acc``), the best of the beam's top 3 distinct builds
  (``completion_slot_acc_best_of_3``: the one nearest the truth in AP, SplatNLP's pick,
  :func:`best_of`; nearest in AP is not always the one recovering most, so it can score
  below top-1 on a build) and top-1 against any evaluated build of the same weapon that
  holds every observed slot item (``completion_slot_acc_any_reference``, SplatNLP's
  multi-reference "Tier-1 set" scoring, the one behind its published 0.673 at k = 6,
  :func:`any_reference_recovered`). ``illegal`` counts builds (top-1 or the best-of-3
  pick) failing the check against what their completer was given; ``observed_dropped``
  counts top-1 builds lacking an observed slot item.

Writes ``completion_eval.json`` and ``completion_eval.png`` (accuracy over k)
under ``--out``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from primary import baseline as freq_baseline
from primary.allocator import allocate, fits
from primary.builds import (
    N_MAIN_ONLY,
    N_MAINS,
    N_SUBS,
    BuildSet,
    check_ap_legal,
    check_slots_legal,
    slots_to_ap,
)
from primary.completion import RankedBuilds, complete_builds
from primary.concept_sets import recorded_concept_set
from primary.examples import make_examples
from primary.splits import data_splits
from primary.vocab import (
    ABILITIES,
    AP_THRESHOLDS,
    GEAR_PIECES,
    MAIN_AP,
    MAIN_ONLY_BY_PIECE,
    MAX_AP,
    SUB_AP,
    Vocab,
    WeaponVocab,
    visible_ap,
)
from runkit.jsonio import read_json, write_json
from runkit.progress import show_progress
from runkit.resume import CONFIG_NAME

N_SLOTS = N_MAINS + N_SUBS
N_AB = len(ABILITIES)
KS = (1, 2, 3, 4, 5, 6)
METHODS = ("random", "baseline", "model")
PROTOCOLS = ("ours", "splatnlp")
# SplatNLP's Sendou evaluation: a beam of 3, the best of its top 3 builds.
DEFAULT_BEAM = {"ours": 4, "splatnlp": 3}
BEST_OF = 3
COMPLETER_INPUT = {
    "ours": "the exact observed AP (minimum AP, never lowered)",
    "splatnlp": "the observed ability tokens only: each observed ability at its highest "
                "token's minimum AP (13 AP -> 12); random keeps the observed slot items",
}


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class HeldOut:
    """Test builds to complete, the training builds the baseline counts, and where they came
    from (a sentence for the report)."""

    test: BuildSet
    train: BuildSet
    origin: str
    skipped: int


def _train_settings(primary_dir: Path) -> dict | None:
    path = primary_dir.parent / CONFIG_NAME
    if not path.is_file():
        return None
    cfg = read_json(path, what="primary run settings")
    need = ("data_source", "data_path", "num_builds", "seed")
    if not isinstance(cfg, dict) or any(k not in cfg for k in need):
        raise ValueError(f"{path} lacks the data settings {list(need)}")
    return cfg


def full_build_in_ranges(low: np.ndarray) -> np.ndarray | None:
    """A full legal build whose tokens are those of ``low`` (a ``(26,)`` row of token lower
    bounds, as token-only data gives), or None. Each standard ability keeps the AP range its
    top token stands for (absent: 0); among the builds that fit, the first of a dynamic
    programme over (mains, subs) used is taken."""
    low = np.asarray(low).astype(np.int64)
    if not fits(low[None])[0]:
        return None
    thresholds = np.asarray(AP_THRESHOLDS)
    free = N_MAINS - int((low[:N_MAIN_ONLY] > 0).sum())
    best: dict[tuple[int, int], tuple[int, ...]] = {(0, 0): ()}
    for a in low[N_MAIN_ONLY:]:
        above = thresholds[thresholds > a]
        high = int(above[0]) - 1 if a > 0 and len(above) else (MAX_AP if a > 0 else 0)
        nxt: dict[tuple[int, int], tuple[int, ...]] = {}
        for (m, sub), picks in best.items():
            for dm in range(free - m + 1):
                for ds in range(N_SUBS - sub + 1):
                    if a <= MAIN_AP * dm + SUB_AP * ds <= high and (m + dm, sub + ds) not in nxt:
                        nxt[(m + dm, sub + ds)] = picks + (MAIN_AP * dm + SUB_AP * ds,)
        best = nxt
    picks = best.get((free, N_SUBS))
    if picks is None:
        return None
    out = low.copy()
    out[:N_MAIN_ONLY] = np.where(low[:N_MAIN_ONLY] > 0, MAIN_AP, 0)
    out[N_MAIN_ONLY:] = picks
    return out


def held_out_builds(primary_dir, vocab: Vocab, weapon_vocab: WeaponVocab, *,
                    data_source: str | None = None, data_path: str = "",
                    num_builds: int = 2000, seed: int = 0) -> HeldOut:
    """The builds to evaluate on (see the module docstring)."""
    primary_dir = Path(primary_dir)
    cfg = _train_settings(primary_dir) if data_source is None else None
    if cfg is not None:
        # A synthetic world is made again with the concept set the primary was trained on.
        concepts = (recorded_concept_set(primary_dir)
                    if cfg["data_source"] == "synthetic" else None)
        splits = data_splits(cfg["data_source"], data_path=cfg["data_path"],
                             num_builds=cfg["num_builds"], seed=cfg["seed"],
                             vocab=cfg.get("vocab_path") or None,
                             weapon_vocab=cfg.get("weapon_vocab_path") or None,
                             concepts=concepts)
        origin = (f"the test split of the primary's training data ({cfg['data_source']}, "
                  f"{cfg['num_builds']} builds, seed {cfg['seed']})")
    else:
        source = data_source or "synthetic"
        count = num_builds * 5 if source == "synthetic" else 0  # test part = 20 %
        splits = data_splits(source, data_path=data_path, num_builds=count, seed=seed,
                             vocab=vocab, weapon_vocab=weapon_vocab)
        origin = (f"the 20 % test part of {source}{' ' + data_path if data_path else ''} "
                  f"(split with seed {seed})")
    test = splits.test_builds()
    if (cfg or {}).get("data_source", data_source) == "splatnlp_tsv":
        # Tokens give AP ranges only: each build becomes a legal one inside its ranges.
        rebuilt = [full_build_in_ranges(r) for r in test.ap]
        keep = np.array([r is not None for r in rebuilt], bool)
        ap = np.stack([r if r is not None else np.zeros(N_AB, np.int64) for r in rebuilt])
        test = BuildSet(test.weapons, np.where(keep[:, None], ap, test.ap), test.concepts,
                        test.concept_names)
        origin += "; AP rebuilt inside each build's token ranges"
    known = np.isin(test.weapons, weapon_vocab.game_ids)
    usable = check_ap_legal(test.ap) & known
    skipped = int((~usable).sum())
    test = test.subset(np.flatnonzero(usable)[:num_builds])
    if len(test) == 0:
        raise ValueError(f"no full legal builds of known weapons to evaluate on in {origin}")
    train = splits.train_builds()
    train = train.subset(np.isin(train.weapons, weapon_vocab.game_ids))
    return HeldOut(test, train, origin, skipped)


# ----------------------------------------------------------------------------- slot items


def slot_items(ap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full legal builds ``(n, 26)`` -> their slots ``mains (n, 3)``, ``subs (n, 9)``."""
    mains = np.zeros((len(ap), N_MAINS), np.int32)
    subs = np.zeros((len(ap), N_SUBS), np.int32)
    for i, row in enumerate(ap):
        alloc = allocate(row.astype(np.int64))
        if not alloc.feasible or alloc.overshoot or alloc.empty_mains or alloc.empty_subs:
            raise ValueError(f"build {i} is not a full legal build: {alloc.reason}")
        mains[i], subs[i] = alloc.mains, alloc.subs
    return mains, subs


def item_counts(mains: np.ndarray, subs: np.ndarray, keep: np.ndarray | None = None):
    """``(n, 52)`` multiset counts of (kind, ability) items; ``keep (n, 12)`` selects slots."""
    items = np.concatenate([mains, subs + N_AB], axis=1).astype(np.int64)
    if keep is None:
        keep = np.ones(items.shape, bool)
    keep = keep & (items >= 0) & (np.concatenate([mains, subs], 1) >= 0)
    n = len(items)
    flat = (np.arange(n)[:, None] * 2 * N_AB + items)[keep]
    return np.bincount(flat, minlength=n * 2 * N_AB).reshape(n, 2 * N_AB)


def hide(mains, subs, k: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Hide ``k`` random slots of each build: ``(observed AP (n, 26), hidden (n, 12) bool)``."""
    n = len(mains)
    keys = rng.random((n, N_SLOTS))
    hidden = keys.argsort(1).argsort(1) < k
    amount = np.array([MAIN_AP] * N_MAINS + [SUB_AP] * N_SUBS)
    items = np.concatenate([mains, subs], 1)
    observed = np.zeros((n, N_AB), np.int64)
    np.add.at(observed, (np.repeat(np.arange(n), N_SLOTS)[~hidden.ravel()],
                         items.ravel()[~hidden.ravel()]),
              np.tile(amount, n)[~hidden.ravel()])
    return observed, hidden


def recovered(pred_mains, pred_subs, true_mains, true_subs, hidden) -> np.ndarray:
    """``(n,)`` hidden items recovered: ``|(P - O) & H|`` over (kind, ability) multisets."""
    p = item_counts(pred_mains, pred_subs)
    o = item_counts(true_mains, true_subs, ~hidden)
    h = item_counts(true_mains, true_subs, hidden)
    return np.minimum(np.maximum(p - o, 0), h).sum(1)


def legal(mains, subs, observed) -> np.ndarray:
    """``(n,)`` bool: an independent check of completed builds."""
    ap = slots_to_ap(mains, subs)
    return (check_slots_legal(mains, subs) & check_ap_legal(ap)
            & (ap.astype(np.int64) >= observed).all(1))


# ----------------------------------------------------------------------------- SplatNLP's protocol


def context_input(observed: np.ndarray) -> np.ndarray:
    """What SplatNLP's completer is told of the observed slots: their tokens only, so each
    observed ability is the minimum AP of its highest token (13 AP -> 12, 10 -> 6; a
    main-only ability stays 10). ``(n, 26)`` -> ``(n, 26)``."""
    return visible_ap(np.asarray(observed)).astype(np.int64)


def ap_closeness(pred_ap: np.ndarray, true_ap: np.ndarray) -> np.ndarray:
    """SplatNLP's build similarity (its ``best_accuracy``): ``1 - |P - T|_1 / (2 * 57)`` over
    the 26 abilities' AP."""
    diff = np.abs(np.asarray(pred_ap, np.int64) - np.asarray(true_ap, np.int64)).sum(-1)
    return 1.0 - diff / (2 * MAX_AP)


def best_of(ranked: RankedBuilds, true_ap: np.ndarray, top: int = BEST_OF) -> np.ndarray:
    """``(n,)`` the build SplatNLP's best-of-``top`` scores: of the first ``top`` ranked
    builds, the one nearest the truth by :func:`ap_closeness` (ties: the better-ranked).
    Nearest in AP is not always the one recovering most hidden slots."""
    close = ap_closeness(ranked.ap[:, :top], np.asarray(true_ap)[:, None, :])
    close = np.where(np.isfinite(ranked.score[:, :top]), close, -np.inf)
    return close.argmax(1)  # the first of equal ones: the better-ranked


def any_reference_recovered(pred_mains, pred_subs, true_mains, true_subs, hidden,
                            weapons: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``(n,)`` hidden items recovered when any evaluated build of the same weapon whose
    slot items hold the observed ones may serve as the truth (the true build is one), the
    best of them counted: SplatNLP's multi-reference ("Tier-1 set") scoring. Each such
    reference hides as many items as the true build, so the rate's denominator is the
    same."""
    pred = item_counts(pred_mains, pred_subs).astype(np.int16)
    seen = item_counts(true_mains, true_subs, ~hidden).astype(np.int16)
    full = item_counts(true_mains, true_subs).astype(np.int16)
    added = np.maximum(pred - seen, 0)
    out = np.zeros(len(pred), np.int64)
    for w in np.unique(weapons):
        refs = full[weapons == w]
        rows = np.flatnonzero(weapons == w)
        for start in range(0, len(rows), chunk):
            r = rows[start:start + chunk]
            missing = refs[None] - seen[r, None]  # (m, refs, 52)
            holds = (missing >= 0).all(-1)
            got = np.minimum(added[r, None], np.maximum(missing, 0)).sum(-1)
            out[r] = np.where(holds, got, -1).max(1)
    return out


def observed_dropped(mains, subs, true_mains, true_subs, hidden) -> np.ndarray:
    """``(n,)`` bool: a completed build lacks one of the observed slot items."""
    seen = item_counts(true_mains, true_subs, ~hidden)
    return (item_counts(mains, subs) < seen).any(1)


# ----------------------------------------------------------------------------- completers


def random_completion(observed: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Allocate each observed row, then fill every empty slot uniformly at random among the
    abilities it may hold (a main: the standard ones and its piece's main-only ones)."""
    n = len(observed)
    mains = np.zeros((n, N_MAINS), np.int32)
    subs = np.zeros((n, N_SUBS), np.int32)
    standard = np.arange(N_MAIN_ONLY, N_AB)
    main_choices = [np.concatenate([[ABILITIES.index(a) for a in MAIN_ONLY_BY_PIECE[p]],
                                    standard]) for p in GEAR_PIECES]
    for i, row in enumerate(observed):
        alloc = allocate(row)
        m, s = alloc.mains.copy(), alloc.subs.copy()
        for p in np.flatnonzero(m < 0):
            m[p] = rng.choice(main_choices[p])
        s[s < 0] = rng.choice(standard, size=int((s < 0).sum()))
        mains[i], subs[i] = m, s
    return mains, subs


def frequency_logits_fn(probs: np.ndarray):
    """The weapon-conditional frequencies as input-independent logits, a ``logits_fn``."""
    p = np.clip(probs.astype(np.float64), 1e-6, 1 - 1e-6)
    table = jnp.asarray(np.log(p / (1 - p)), jnp.float32)

    @jax.jit
    def fn(tokens, weapons, key_padding_mask):
        del tokens, key_padding_mask
        return table[weapons[:, 0]]

    return fn


def fit_frequencies(train: BuildSet, vocab: Vocab, weapon_vocab: WeaponVocab) -> np.ndarray:
    """``(weapon_vocab_size, V)`` P(token | weapon) over the training builds (add-one)."""
    ex = make_examples(train, vocab, weapon_vocab, num_instances=0, include_null=True)
    base = freq_baseline.fit_baseline(ex, len(weapon_vocab), pad_id=vocab.pad_id,
                                      null_id=vocab.null_id)
    return base.probs


# ----------------------------------------------------------------------------- evaluation


def evaluate_completion(model, vocab: Vocab, weapon_vocab: WeaponVocab, held: HeldOut, *,
                        beam_size: int = 4, seed: int = 0, ks=KS, progress: bool = True,
                        protocol: str = "ours") -> dict:
    """``completion_slot_acc`` and illegal counts per method and k (see the module docstring);
    ``protocol="splatnlp"`` adds the best-of-3 and any-reference figures."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    splatnlp = protocol == "splatnlp"
    test = held.test
    true_mains, true_subs = slot_items(test.ap)
    logits = {"baseline": frequency_logits_fn(fit_frequencies(held.train, vocab, weapon_vocab)),
              "model": None}
    keys = ["completion_slot_acc", "recovered", "hidden", "illegal", "seconds"]
    if splatnlp:
        keys += ["completion_slot_acc_best_of_3", "recovered_best_of_3",
                 "completion_slot_acc_any_reference", "recovered_any_reference",
                 "observed_dropped"]
    result = {m: {key: [] for key in keys} for m in METHODS}
    for k in show_progress(ks, desc="hidden slots k", disable=not progress):
        observed, hidden = hide(true_mains, true_subs, k, np.random.default_rng([seed, k]))
        n_hidden = int(hidden.sum())
        for method in METHODS:
            t0 = time.perf_counter()
            # SplatNLP's random baseline, like ours, keeps the observed slot items.
            given = context_input(observed) if splatnlp and method != "random" else observed
            if method == "random":
                mains, subs = random_completion(given, np.random.default_rng([seed, k, 1]))
                picked = (mains, subs)  # one build: the best of 3 is itself
            else:
                out = complete_builds(model if method == "model" else None, vocab,
                                      weapon_vocab, test.weapons, given,
                                      beam_size=beam_size, logits_fn=logits[method])
                mains, subs = out.mains, out.subs
                pick = (np.arange(len(test)), best_of(out.ranked, test.ap))
                picked = (out.ranked.mains[pick], out.ranked.subs[pick])
            seconds = time.perf_counter() - t0
            got = int(recovered(mains, subs, true_mains, true_subs, hidden).sum())
            bad = ~legal(mains, subs, given)
            r = result[method]
            r["recovered"].append(got)
            r["hidden"].append(n_hidden)
            r["completion_slot_acc"].append(got / n_hidden)
            r["seconds"].append(round(seconds, 3))
            if splatnlp:
                best = int(recovered(*picked, true_mains, true_subs, hidden).sum())
                anyref = int(any_reference_recovered(mains, subs, true_mains, true_subs, hidden,
                                                     test.weapons).sum())
                bad |= ~legal(*picked, given)
                r["recovered_best_of_3"].append(best)
                r["completion_slot_acc_best_of_3"].append(best / n_hidden)
                r["recovered_any_reference"].append(anyref)
                r["completion_slot_acc_any_reference"].append(anyref / n_hidden)
                r["observed_dropped"].append(
                    int(observed_dropped(mains, subs, true_mains, true_subs, hidden).sum()))
            r["illegal"].append(int(bad.sum()))
    report = {"protocol": protocol, "completer_input": COMPLETER_INPUT[protocol],
              "k": list(ks), "methods": result, "num_builds": len(test),
              "beam_size": beam_size, "seed": seed, "data": held.origin,
              "skipped_builds": held.skipped,
              "matching": "multiset of (slot kind, ability); recovered = |(P - O) & H|"}
    if splatnlp:
        report["best_of_3"] = ("of the beam's top 3 distinct builds, the one nearest the truth "
                               "in AP (1 - L1 / 114, SplatNLP's best_accuracy); ties: the "
                               "better-ranked")
        report["any_reference"] = ("top-1 scored against the best of the evaluated builds of "
                                   "the same weapon that hold every observed slot item "
                                   "(SplatNLP's Tier-1 set scoring)")
    return report


FIGURES = {  # result key -> how the plot and the summary name it
    "completion_slot_acc": "top-1",
    "completion_slot_acc_best_of_3": "best of 3",
    "completion_slot_acc_any_reference": "top-1, any same-weapon reference",
}


def figures(result: dict) -> list[str]:
    """The ``completion_slot_acc`` variants ``result`` holds (top-1 first)."""
    return [key for key in FIGURES if key in result["methods"][METHODS[0]]]


def plot(result: dict, path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    keys = figures(result)
    styles = dict(zip(FIGURES, ("-", "--", ":")))
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for i, method in enumerate(METHODS):
        for key in keys:
            ax.plot(result["k"], result["methods"][method][key], marker="o", color=f"C{i}",
                    linestyle=styles[key], label=method if key == keys[0] else None)
    ax.set_xlabel("hidden slots k (of 12)")
    ax.set_ylabel("completion_slot_acc" + ("" if len(keys) > 1 else " (top-1)"))
    ax.set_ylim(0, 1)
    ax.set_title(f"slot recovery on {result['num_builds']} held-out builds "
                 f"({result['protocol']} protocol)")
    ax.grid(alpha=0.3)
    methods = ax.legend(loc="upper left", fontsize="small")
    if len(keys) > 1:  # a second legend: which line style is which figure
        ax.add_artist(methods)
        ax.legend([Line2D([], [], color="gray", linestyle=styles[key]) for key in keys],
                  [FIGURES[key] for key in keys], loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(primary_dir: str, out: str, *, data_source: str | None, data_path: str, num_builds: int,
        beam_size: int | None, seed: int, protocol: str = "ours") -> dict:
    """Evaluate, write ``completion_eval.json`` and ``.png`` under ``out``; ``beam_size``
    None: :data:`DEFAULT_BEAM` of the protocol."""
    from primary.model_dir import load_primary

    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    beam_size = DEFAULT_BEAM[protocol] if beam_size is None else beam_size
    if num_builds <= 0:
        raise ValueError(f"--num_builds must be positive, got {num_builds}")
    if beam_size < 1:
        raise ValueError(f"--beam_size must be at least 1, got {beam_size}")
    if not (Path(primary_dir) / "config.json").is_file():
        raise FileNotFoundError(f"--primary_dir {primary_dir} is not a primary model directory "
                                "(no config.json)")
    model, vocab, weapon_vocab = load_primary(primary_dir)
    held = held_out_builds(primary_dir, vocab, weapon_vocab, data_source=data_source,
                           data_path=data_path, num_builds=num_builds, seed=seed)
    t0 = time.perf_counter()
    result = evaluate_completion(model, vocab, weapon_vocab, held, beam_size=beam_size,
                                 seed=seed, protocol=protocol)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["primary_dir"] = str(primary_dir)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "completion_eval.json", result)
    plot(result, out_dir / "completion_eval.png")
    return result


def summary_lines(result: dict) -> list[str]:
    lines = [f"{result['num_builds']} builds from {result['data']}; beam {result['beam_size']}; "
             f"{result['protocol']} protocol (completer given {result['completer_input']})"]
    for key in figures(result):
        lines.append(f"completion_slot_acc, {FIGURES[key]}:")
        lines.append("k  " + "  ".join(f"{m:>9}" for m in METHODS)
                     + ("   illegal" if key == "completion_slot_acc" else ""))
        for i, k in enumerate(result["k"]):
            accs = "  ".join(f"{result['methods'][m][key][i]:9.3f}" for m in METHODS)
            bad = sum(result["methods"][m]["illegal"][i] for m in METHODS)
            lines.append(f"{k}  {accs}" + (f"   {bad}" if key == "completion_slot_acc" else ""))
    return lines


def main(argv):
    from absl import app, flags, logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    result = run(f.primary_dir, f.out, data_source=f.data_source, data_path=f.data_path,
                 num_builds=f.num_builds, beam_size=f.beam_size, seed=f.seed,
                 protocol=f.protocol)
    print("\n".join(summary_lines(result)))
    print(f"wrote {Path(f.out) / 'completion_eval.json'} and completion_eval.png")
    return 0


if __name__ == "__main__":
    from absl import flags

    from runkit.cli import report_user_errors, run_with_flagfiles

    flags.DEFINE_string("primary_dir", None, "Primary model directory; required.")
    flags.DEFINE_enum("data_source", None, ["synthetic", "statink", "splatnlp_tsv"],
                      "Take the held-out builds from this source (default: the primary's own "
                      "test split).")
    flags.DEFINE_string("data_path", "", "File of --data_source (statink, splatnlp_tsv).")
    flags.DEFINE_integer("num_builds", 2000, "Held-out builds to complete (at most).")
    flags.DEFINE_enum("protocol", "ours", list(PROTOCOLS),
                      "ours: the completers get the exact observed AP, top-1 is scored. "
                      "splatnlp: SplatNLP's Sendou evaluation: they get only the observed "
                      "ability tokens, and top-1, best-of-3 and any-reference top-1 are scored.")
    flags.DEFINE_integer("beam_size", None, "Beam width of the model and baseline completers "
                         "(default: 4; 3 with --protocol=splatnlp, as SplatNLP's evaluation).")
    flags.DEFINE_integer("seed", 0, "Seed of which slots are hidden, and of the split when it "
                         "is not the primary's.")
    flags.DEFINE_string("out", "completion_eval", "Output directory (completion_eval.json, "
                        "completion_eval.png).")
    flags.mark_flag_as_required("primary_dir")
    run_with_flagfiles(report_user_errors(main))
