"""Steer the primary model through one SAE feature and print what its predictions do.

    python benchmarks/steering_example.py --workdir=DIR [--concept=stealth_slayer]
        [--feature=N] [--value=0]

Picks a feature (given, else the best detector of ``--concept`` from
``DIR/concepts.json``, else the concept recovered best), finds the held-out
build on which it fires most, and runs the model on that build with the
feature left alone and with it set to ``--value`` (EDIT mode, reconstruction
error kept, so only the edit differs). Prints the top predictions before and
after and the tokens whose probability moved most.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.analysis.pipeline import (  # noqa: E402
    evaluation_builds,
    full_build_inputs,
    sae_activations,
)
from apps.analysis.report import ability_label, token_label  # noqa: E402
from bridge.harvest import pooled_of_inputs  # noqa: E402
from bridge.steering import HookMode, hooked_forward  # noqa: E402
from primary.model_dir import load_primary  # noqa: E402
from runkit.run_dir import RunDir  # noqa: E402
from sae_jax.sae_dir import load_sae  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "SAE run directory")
_CONCEPT = flags.DEFINE_string("concept", None, "steer the best detector of this concept")
_FEATURE = flags.DEFINE_integer("feature", None, "steer this feature")
_VALUE = flags.DEFINE_float("value", 0.0, "value the feature is set to")
_TOP = 8


def _pick_feature(workdir: Path) -> tuple[int, str]:
    if _FEATURE.value is not None:
        return _FEATURE.value, f"feature {_FEATURE.value}"
    path = workdir / "concepts.json"
    if not path.exists():
        raise SystemExit(f"{path} does not exist: pass --feature")
    rows = json.loads(path.read_text())["rows"]
    if _CONCEPT.value:
        match = [r for r in rows if r["concept"] == _CONCEPT.value]
        if not match:
            raise SystemExit(f"no concept {_CONCEPT.value!r}; choose one of "
                             f"{[r['concept'] for r in rows]}")
        row = match[0]
    else:
        row = max(rows, key=lambda r: r["sae_f1"])
    return row["feature"], (f"feature {row['feature']}, best detector of {row['concept']!r} "
                            f"(F1 {row['sae_f1']:.2f}, AUROC {row['sae_auroc']:.2f})")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    workdir = Path(_WORKDIR.value).absolute()
    primary, vocab, weapon_vocab = load_primary(RunDir(workdir).primary_dir())
    sae = load_sae(workdir / "sae")
    feature, what = _pick_feature(workdir)
    builds = evaluation_builds(workdir, vocab, weapon_vocab)
    inputs = full_build_inputs(builds, vocab, weapon_vocab)
    pooled = pooled_of_inputs(primary, inputs)
    acts = np.concatenate([np.asarray(h)[v, feature] for h, v in sae_activations(sae, pooled)])
    i = int(np.argmax(acts))
    batch = {k: inputs[k][i:i + 1] for k in ("tokens", "weapons", "key_padding_mask")}

    before = hooked_forward(primary, sae, *batch.values(), HookMode.NO_CHANGE)
    after = hooked_forward(primary, sae, *batch.values(), HookMode.EDIT, feature=feature,
                           value=_VALUE.value, keep_error=True)
    p0 = 1 / (1 + np.exp(-np.asarray(before.logits[0], np.float64)))
    p1 = 1 / (1 + np.exp(-np.asarray(after.logits[0], np.float64)))
    ability = [i for i, t in enumerate(vocab.id_to_token) if not t.startswith("<")]

    def top(p):
        order = sorted(ability, key=lambda t: -p[t])[:_TOP]
        return ", ".join(f"{token_label(vocab.id_to_token[t])} {p[t]:.2f}" for t in order)

    build = builds.build(i)
    from primary.weapons import weapon_name

    print(f"{what}")
    print(f"fires most ({acts[i]:.3f}; max over {len(acts)} held-out builds) on:")
    print(f"  {weapon_name(int(builds.weapons[i]))}: " + ", ".join(
        f"{ability_label(a)} {ap}" for a, ap in sorted(build.items(), key=lambda kv: -kv[1])))
    if builds.concepts is not None:
        print(f"  planted concepts: {', '.join(builds.concepts_of(i)) or 'none'}")
    print(f"predictions as is:          {top(p0)}")
    print(f"feature {feature} set to {_VALUE.value:g}:   {top(p1)}")
    moved = sorted(ability, key=lambda t: -abs(p1[t] - p0[t]))[:_TOP]
    print("largest changes:")
    for t in moved:
        print(f"  {token_label(vocab.id_to_token[t]):28s} {p0[t]:.3f} -> {p1[t]:.3f} "
              f"({p1[t] - p0[t]:+.3f})")


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    app.run(main)
