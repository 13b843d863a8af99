"""Train many SAEs over one primary and one activation buffer, as vmapped stacks.

    python -m apps.sweep --flagfile=configs/sweep_demo.flags --workdir=DIR [--primary_dir=...]

``--activations=PATH`` trains the members on your own activations instead of a primary's
(as ``sae_jax.train --activations`` does; it is a sweep-wide setting).

The flags of ``sae_jax.train`` set the settings every member starts from (and the
sweep-wide ones: data, buffer, loop; ``--seed`` is the shared batch order). The members:

``--members``: a JSON list; each entry is an object of settings (flag names) that member
group overrides, and optionally ``"grid": {setting: [values, ...]}`` (every combination
becomes a member) and ``"name": "..."`` (the prefix of its members' names, default the
architecture). ``--seeds=0,1,2``: each member once per seed (its initialisation). Example::

    --members=[{"architecture": "relu_l1", "grid": {"l1_coeff": [1e-3, 3e-3]}},
               {"architecture": "topk", "resample_steps": [], "grid": {"k": [8, 16]}}]

gives 4 x len(seeds) members named like ``relu_l1.l1_coeff-0.001.seed-0``, each a normal SAE
run directory ``DIR/members/<name>/``. Writes ``DIR/sweep.json``, ``DIR/frontier.png`` and
``DIR/sweep.html``. Run again with the same ``--workdir`` to resume.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import typing

from absl import app, flags, logging

from runkit.cli import report_user_errors, run_with_flagfiles
from runkit.errors import UserError
from runkit.flags import config_from_flags, define_config_flags
from sae_jax.config import SAETrainConfig

_NOT_SETTINGS = ("extra", "concept_set_sha256")


def define_flags() -> None:
    """Flags are defined only when run as a program, so importing this module (beside
    ``sae_jax.train``, which defines the same names) defines none."""
    flags.DEFINE_string("workdir", None, "Sweep directory (created; resumed if it exists); "
                        "required.")
    flags.DEFINE_string("primary_dir", None,
                        "Primary model directory; default: train (or reuse) the demo primary.")
    flags.DEFINE_bool("analyze", True, "Analyze every member after training.")
    flags.DEFINE_integer("stop_after_steps", None,
                         "Checkpoint and stop after this many SAE steps, resumable "
                         "(default: run to the end).", lower_bound=1)
    flags.DEFINE_integer("analysis_builds", None, "Analyze each member on at most this many "
                         "held-out builds (default: all --eval_builds).")
    flags.DEFINE_string("members", "[{}]", "JSON list of member groups: each an object of the "
                        "settings it overrides, with an optional \"grid\" and \"name\" (see "
                        "the command's description above).")
    flags.DEFINE_list("seeds", ["0"], "Initialisation seeds: each member once per seed.")
    define_config_flags(SAETrainConfig, skip=_NOT_SETTINGS, help_overrides={
        "seed": "Data order and the members' shared batch order (initialisation: --seeds).",
    })


_HINTS = typing.get_type_hints(SAETrainConfig)
_FIELDS = {f.name for f in dataclasses.fields(SAETrainConfig)} - set(_NOT_SETTINGS)


def _coerce(name: str, value, where: str):
    """``value`` as the type of setting ``name``; a wrong type is an error naming ``where``."""
    kind = _HINTS[name]
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                  for v in value):
            raise UserError(f"{where}: {name} must be a list of integers, got {value!r}")
        return tuple(value)
    ok = {bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, str)}[kind]
    if not ok:
        raise UserError(f"{where}: {name} must be of type {kind.__name__}, got {value!r}")
    return float(value) if kind is float else value


def _short(value) -> str:
    if isinstance(value, tuple):
        return "_".join(map(str, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_members(text: str, seeds, base: SAETrainConfig):
    """``[SweepMember]`` from the ``--members`` JSON and the seeds, on top of ``base``.

    Errors name the bad entry (``--members entry <i>``) and setting."""
    from apps.training.sweep_run import SWEEP_WIDE, SweepMember

    try:
        groups = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--members is not valid JSON ({e})") from None
    if not isinstance(groups, list) or not groups:
        raise UserError(f"--members must be a non-empty JSON list of objects, got {text[:80]!r}")
    try:
        seeds = [int(s) for s in seeds]
    except ValueError:
        raise UserError(f"--seeds must be integers, got {seeds}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must be distinct integers, got {seeds}")
    members = []
    for i, group in enumerate(groups):
        where = f"--members entry {i}"
        if not isinstance(group, dict):
            raise UserError(f"{where} must be a JSON object of settings, got {group!r}")
        group = dict(group)
        prefix, grid = group.pop("name", None), group.pop("grid", {})
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v
                                                 for v in grid.values()):
            raise UserError(f"{where}: grid must map settings to non-empty lists, got {grid!r}")
        for name in list(group) + list(grid):
            if name == "seed":
                raise UserError(f"{where}: set seeds with --seeds, not per entry")
            if name not in _FIELDS:
                raise UserError(f"{where}: unknown setting {name!r}")
            if name in SWEEP_WIDE:
                raise UserError(f"{where}: {name} is sweep-wide (data, buffer, loop); set it "
                                "as a flag for the whole sweep")
        fixed = {k: _coerce(k, v, where) for k, v in group.items()}
        names = sorted(grid)
        for values in itertools.product(*(grid[k] for k in names)):
            point = {k: _coerce(k, v, f"{where} grid") for k, v in zip(names, values)}
            for seed in seeds:
                settings = {**fixed, **point, "seed": seed}
                try:
                    cfg = dataclasses.replace(base, **settings)
                except TypeError as e:
                    raise UserError(f"{where}: {e}") from None
                label = prefix or cfg.architecture
                parts = [label] + [f"{k}-{_short(v)}" for k, v in point.items()]
                members.append(SweepMember(".".join(parts + [f"seed-{seed}"]), cfg))
    names = [m.name for m in members]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"--members gives several members the same name {dupes[:3]}; give "
                        "the entries distinct \"name\" prefixes")
    return members


@report_user_errors
def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    if not f.workdir:
        raise app.UsageError("--workdir is required")
    logging.set_verbosity(logging.WARNING)
    from apps.training.sweep_run import train_sweep

    base = config_from_flags(SAETrainConfig, flags.FLAGS, skip=_NOT_SETTINGS)
    members = parse_members(f.members, f.seeds, base)
    result = train_sweep(base, members, f.workdir, primary_dir=f.primary_dir,
                         stop_after_steps=f.stop_after_steps, analyze=f.analyze,
                         analysis_builds=f.analysis_builds)
    if result.get("stopped"):
        print(f"stopped after {result['steps']} SAE steps; run again to resume")
        return 0
    print(f"done: {f.workdir} ({len(members)} members; sweep.html, frontier.png)")
    return 0


if __name__ == "__main__":
    define_flags()
    run_with_flagfiles(main)
