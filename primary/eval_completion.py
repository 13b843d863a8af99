"""How well completion recovers hidden slots of held-out builds.

    python -m primary.eval_completion --primary_dir=DIR [--data_source=synthetic|statink|
        splatnlp_tsv --data_path=...] [--num_builds=2000] [--beam_size=4] [--out=DIR]

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
from primary.completion import complete_builds
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
)
from runkit.jsonio import read_json, write_json
from runkit.progress import show_progress
from runkit.resume import CONFIG_NAME

N_SLOTS = N_MAINS + N_SUBS
N_AB = len(ABILITIES)
KS = (1, 2, 3, 4, 5, 6)
METHODS = ("random", "baseline", "model")


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
                        beam_size: int = 4, seed: int = 0, ks=KS, progress: bool = True) -> dict:
    """``completion_slot_acc`` and illegal counts per method and k (see the module docstring)."""
    test = held.test
    true_mains, true_subs = slot_items(test.ap)
    logits = {"baseline": frequency_logits_fn(fit_frequencies(held.train, vocab, weapon_vocab)),
              "model": None}
    result = {m: {"completion_slot_acc": [], "recovered": [], "hidden": [], "illegal": [],
                  "seconds": []} for m in METHODS}
    for k in show_progress(ks, desc="hidden slots k", disable=not progress):
        observed, hidden = hide(true_mains, true_subs, k, np.random.default_rng([seed, k]))
        for method in METHODS:
            t0 = time.perf_counter()
            if method == "random":
                mains, subs = random_completion(observed, np.random.default_rng([seed, k, 1]))
            else:
                out = complete_builds(model if method == "model" else None, vocab,
                                      weapon_vocab, test.weapons, observed,
                                      beam_size=beam_size, logits_fn=logits[method])
                mains, subs = out.mains, out.subs
            seconds = time.perf_counter() - t0
            got = int(recovered(mains, subs, true_mains, true_subs, hidden).sum())
            r = result[method]
            r["recovered"].append(got)
            r["hidden"].append(int(hidden.sum()))
            r["completion_slot_acc"].append(got / int(hidden.sum()))
            r["illegal"].append(int((~legal(mains, subs, observed)).sum()))
            r["seconds"].append(round(seconds, 3))
    return {"k": list(ks), "methods": result, "num_builds": len(test), "beam_size": beam_size,
            "seed": seed, "data": held.origin, "skipped_builds": held.skipped,
            "matching": "multiset of (slot kind, ability); recovered = |(P - O) & H|"}


def plot(result: dict, path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for method in METHODS:
        ax.plot(result["k"], result["methods"][method]["completion_slot_acc"], marker="o",
                label=method)
    ax.set_xlabel("hidden slots k (of 12)")
    ax.set_ylabel("completion_slot_acc (top-1)")
    ax.set_ylim(0, 1)
    ax.set_title(f"slot recovery on {result['num_builds']} held-out builds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(primary_dir: str, out: str, *, data_source: str | None, data_path: str, num_builds: int,
        beam_size: int, seed: int) -> dict:
    from primary.model_dir import load_primary

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
                                 seed=seed)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["primary_dir"] = str(primary_dir)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "completion_eval.json", result)
    plot(result, out_dir / "completion_eval.png")
    return result


def summary_lines(result: dict) -> list[str]:
    lines = [f"{result['num_builds']} builds from {result['data']}; beam {result['beam_size']}",
             "k  " + "  ".join(f"{m:>9}" for m in METHODS) + "   illegal"]
    for i, k in enumerate(result["k"]):
        accs = "  ".join(f"{result['methods'][m]['completion_slot_acc'][i]:9.3f}"
                         for m in METHODS)
        bad = sum(result["methods"][m]["illegal"][i] for m in METHODS)
        lines.append(f"{k}  {accs}   {bad}")
    return lines


def main(argv):
    from absl import app, flags, logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    result = run(f.primary_dir, f.out, data_source=f.data_source, data_path=f.data_path,
                 num_builds=f.num_builds, beam_size=f.beam_size, seed=f.seed)
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
    flags.DEFINE_integer("beam_size", 4, "Beam width of the model and baseline completers.")
    flags.DEFINE_integer("seed", 0, "Seed of which slots are hidden, and of the split when it "
                         "is not the primary's.")
    flags.DEFINE_string("out", "completion_eval", "Output directory (completion_eval.json, "
                        "completion_eval.png).")
    flags.mark_flag_as_required("primary_dir")
    run_with_flagfiles(report_user_errors(main))
