"""The demo's figures in one results file, and the README's results table drawn from it.

    python -m benchmarks.demo_results --workdir=runs/demo [--out=benchmarks/results/demo.json]

When ``--workdir`` holds no finished demo run, README command 1's training
(``python -m sae_jax.train --flagfile=configs/demo.flags --workdir=...``) runs first and is
timed (an unfinished run resumes and its time is marked as a resumed one). The figures are
then read from the run's files, written to ``--out`` together with the machine and the
commit, and the README's table (between the two ``demo-results`` markers) is redrawn from
them, so this command alone refreshes both. ``tests/test_readme.py`` checks that the README
holds exactly the table :func:`render_table` draws from the committed results file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.timing import cpu_model, load_average  # noqa: E402

DEMO_COMMAND = ("python -m sae_jax.train --flagfile=configs/demo.flags "
                "--workdir={workdir}")
RESULTS = REPO_ROOT / "benchmarks" / "results" / "demo.json"
README = REPO_ROOT / "README.md"
TABLE_START = "<!-- demo-results:start (python -m benchmarks.demo_results) -->"
TABLE_END = "<!-- demo-results:end -->"
# The files a finished demo run holds, each with what it is (named when one is missing).
RUN_FILES = {
    "metrics.json": "the SAE's held-out evaluation",
    "concepts.json": "concept recovery",
    "explanations.json": "feature explanations",
    "absorption.json": "feature absorption on the AP rungs",
    "primary_run/metrics.json": "the demo primary's evaluation",
}


class DemoResultsError(ValueError):
    """A run folder, results file or README that the figures cannot be read from."""


def is_finished(workdir: Path) -> bool:
    """Whether ``workdir`` holds every file a finished demo run writes."""
    return all((workdir / name).is_file() for name in RUN_FILES)


def _read(workdir: Path, name: str) -> dict:
    path = workdir / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DemoResultsError(f"{path}: missing ({RUN_FILES[name]}); is {workdir} a "
                               "finished demo run?") from None
    except json.JSONDecodeError as e:
        raise DemoResultsError(f"{path}: not readable JSON ({e})") from None


def _field(doc: dict, key: str, where: str):
    """``doc[key]`` (keys separated by dots); a missing one is an error naming the file."""
    node = doc
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise DemoResultsError(f"{where}: no field {key!r}")
        node = node[part]
    return node


def collect(workdir: str | os.PathLike) -> dict:
    """The demo's figures from the files of the finished run at ``workdir``."""
    workdir = Path(workdir)
    docs = {name: _read(workdir, name) for name in RUN_FILES}

    def get(name, key):
        return _field(docs[name], key, str(workdir / name))

    ground_truth = get("explanations.json", "summary.ground_truth")
    checked = _field(ground_truth, "checked", str(workdir / "explanations.json"))
    return {
        "architecture": get("metrics.json", "architecture"),
        "k": docs["metrics.json"].get("k"),
        "d_in": get("metrics.json", "d_in"),
        "d_sae": get("metrics.json", "d_sae"),
        "primary_val_f1": get("primary_run/metrics.json", "val_f1"),
        "primary_baseline_f1": get("primary_run/metrics.json", "baseline_f1"),
        "primary_params": get("primary_run/metrics.json", "num_params"),
        "primary_seconds": get("primary_run/metrics.json", "seconds"),
        "fve": get("metrics.json", "fve"),
        "loss_recovered": get("metrics.json", "loss_recovered"),
        "l0": get("metrics.json", "l0"),
        # Dead: never active on the held-out evaluation inputs, the partial builds made
        # from the evaluation builds (the kind of input the SAE trains on).
        "dead_fraction": get("metrics.json", "dead_fraction"),
        "dead_inputs": get("metrics.json", "num_inputs"),
        "sae_steps": get("metrics.json", "steps"),
        # From the command's start to the end of SAE training (the primary's included);
        # the evaluation and analysis after it are timed nowhere in the run's files.
        "train_seconds": get("metrics.json", "seconds"),
        "concepts_recovered": get("concepts.json", "summary.recovered"),
        "concepts_with_pairs": get("concepts.json", "summary.recovered_with_pairs"),
        "concepts_total": get("concepts.json", "summary.total"),
        "concept_builds": get("concepts.json", "summary.num_builds"),
        "explained": get("explanations.json", "summary.explained"),
        "explained_f1": get("explanations.json", "summary.explained_f1"),
        "explained_activity_share": get("explanations.json",
                                        "summary.explained_activity_share"),
        "explanation_builds": get("explanations.json", "num_builds"),
        "causal_agreement": get("explanations.json", "summary.causal_agreement"),
        "causal_checked": get("explanations.json", "summary.causal_checked"),
        "median_f1_window": get("explanations.json", "summary.median_f1_window"),
        "window_features": get("explanations.json", "summary.window_features"),
        "ground_truth_matched": _field(ground_truth, "matched",
                                       str(workdir / "explanations.json")),
        "ground_truth_checked": checked,
        "absorption_fraction": get("absorption.json", "summary.mean_absorption_fraction"),
        "absorption_split_share": get("absorption.json", "summary.split_share"),
        "absorption_rungs_measured": get("absorption.json", "summary.measured"),
        "absorption_rungs": get("absorption.json", "summary.concepts"),
    }


def commit_of(repo: Path = REPO_ROOT) -> dict:
    """The checked-out commit and whether tracked files differ from it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def machine() -> dict:
    return {"cpu_model": cpu_model(), "cpu_cores": os.cpu_count(),
            "load_average_1_5_15": load_average()}


def run_demo(workdir: Path) -> float:
    """Run README command 1's training into ``workdir`` from the repository root; its
    wall time in seconds. A failed run is an error naming its exit status."""
    cmd = [sys.executable, "-m", "sae_jax.train", "--flagfile=configs/demo.flags",
           f"--workdir={os.path.abspath(workdir)}"]
    start = time.perf_counter()
    rc = subprocess.run(cmd, cwd=REPO_ROOT).returncode
    if rc != 0:
        raise DemoResultsError(f"the demo run into {workdir} failed (exit status {rc})")
    return time.perf_counter() - start


# ---------------------------------------------------------------------- the README table

def _minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _architecture(fig: dict) -> str:
    from sae_jax.architectures.registry import get_architecture

    name = get_architecture(fig["architecture"]).display_name
    return f"{name}, k = {fig['k']}" if fig.get("k") else name


def render_table(results: dict) -> str:
    """The README's results table (markdown) from a results file's content, rounded for
    people."""
    f = results["figures"]
    agreeing = round(f["causal_agreement"] * f["causal_checked"])
    wall = results.get("wall_s")
    if wall is None:
        time_cell = "not measured"
    else:
        time_cell = _minutes(wall) + (" (resumed run)" if results.get("resumed") else "")
        if results.get("wall_load_average_1min"):
            start, end = results["wall_load_average_1min"]
            time_cell += f" (load average {start:g} at the start, {end:g} at the end)"
    rows = [
        ("primary validation F1", f"**{f['primary_val_f1']:.3f}** vs "
         f"{f['primary_baseline_f1']:.3f}",
         "the demo primary's micro-F1 at completing held-out partial builds, against a "
         "weapon-conditional token-frequency baseline"),
        ("SAE", f"{f['d_in']} -> {f['d_sae']}, {_architecture(f)}",
         f"trained for {f['sae_steps']:,} steps on the primary's pooled vectors"),
        ("FVE", f"**{f['fve']:.3f}**",
         "fraction of the pooled vector's variance the SAE reconstructs"),
        ("loss recovered", f"{f['loss_recovered']:.3f}",
         "of the primary's loss lost by mean-ablating the pooled vector, the share the "
         "reconstruction recovers"),
        ("L0", f"{f['l0']:.1f} of {f['d_sae']}", "mean number of active features per input"),
        ("dead features", _pct(f["dead_fraction"]),
         f"never active on the {f['dead_inputs']:,} held-out evaluation inputs (partial "
         "builds, the kind the SAE trains on)"),
        ("concepts recovered", f"**{f['concepts_recovered']} / {f['concepts_total']}**",
         f"planted concepts one feature detects with F1 >= 0.8 on {f['concept_builds']:,} "
         "held-out builds"),
        ("... counting pairs", f"{f['concepts_with_pairs']} / {f['concepts_total']}",
         "one feature, or two active together"),
        ("features explained", f"{f['explained']} of {f['d_sae']}, carrying "
         f"{_pct(f['explained_activity_share'])} of the activity",
         f"whose rule reaches held-out F1 >= {f['explained_f1']:g} on the inputs where the "
         f"feature fires, full or partial builds ({f['explanation_builds']:,} builds, half "
         "fit, half held out)"),
        ("median explanation F1", f"**{f['median_f1_window']:.2f}**",
         f"over the {f['window_features']} features firing on 1-30% of builds"),
        ("causal agreement", f"{_pct(f['causal_agreement'])} ({agreeing} of "
         f"{f['causal_checked']})",
         "explained features whose activation moves as the rule says when its conditions "
         "are added or removed"),
        ("ground truth", f"{f['ground_truth_matched']} / {f['ground_truth_checked']}",
         "recovered concepts whose explanation names exactly their abilities"),
        ("absorption", f"{f['absorption_fraction']:.3f}, {_pct(f['absorption_split_share'])} "
         "of rungs split",
         f"mean share of an AP rung's probe that other latents take when its main latents "
         f"are silent, over the {f['absorption_rungs_measured']} of "
         f"{f['absorption_rungs']} rungs measurable (docs/analysis.md)"),
        ("time", time_cell, "the whole training command (primary, SAE, evaluation, "
         "analysis)"),
    ]
    lines = ["| figure | demo | what it is |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    cpu = results["machine"]
    commit = (results.get("commit") or "unknown")[:10]
    lines.append("")
    lines.append(f"Measured on a {cpu['cpu_cores']}-core CPU ({cpu['cpu_model']}) at commit "
                 f"`{commit}`; `benchmarks/results/demo.json`.")
    return "\n".join(lines)


def table_block(results: dict) -> str:
    return f"{TABLE_START}\n{render_table(results)}\n{TABLE_END}"


def readme_table(text: str, where: str = "README.md") -> str:
    """The block between the markers of a README's text (markers included)."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise DemoResultsError(f"{where}: no results table between {TABLE_START!r} and "
                               f"{TABLE_END!r}")
    return text[start:end + len(TABLE_END)]


def update_readme(path: Path, results: dict) -> None:
    text = path.read_text()
    path.write_text(text.replace(readme_table(text, str(path)), table_block(results)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True,
                   help="a finished demo run, or where to run the demo first")
    p.add_argument("--out", default=str(RESULTS), help="the results file to write")
    p.add_argument("--readme", default=str(README),
                   help="the README whose results table is redrawn ('' leaves it)")
    p.add_argument("--wall_s", type=float, default=None,
                   help="the demo's wall time in seconds when it was measured outside this "
                        "command (a finished run given in --workdir)")
    p.add_argument("--commit", default=None,
                   help="the commit a run made outside this command was made at "
                        "(default: the checked-out one)")
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    resumed = False
    wall, timed_by, wall_load = args.wall_s, "given (--wall_s)", None
    if not is_finished(workdir):
        if wall is not None:
            raise DemoResultsError(f"--wall_s={wall:g} given, but {workdir} holds no "
                                   "finished demo run to go with it")
        resumed = workdir.exists() and any(workdir.iterdir())
        load_before = load_average()[0]
        wall, timed_by = run_demo(workdir), "benchmarks.demo_results"
        wall_load = [load_before, load_average()[0]]
    commit = commit_of()
    if args.commit:
        commit = {"commit": args.commit, "dirty": None}
    results = {
        "command": DEMO_COMMAND.format(workdir=args.workdir),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **commit,
        "machine": machine(),
        "wall_s": None if wall is None else round(wall, 1),
        "wall_timed_by": None if wall is None else timed_by,
        "wall_load_average_1min": wall_load,  # at the run's start and end
        "resumed": resumed,
        "figures": collect(workdir),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    if args.readme:
        update_readme(Path(args.readme), results)
        print(f"redrew the results table in {args.readme}")
    print(render_table(results))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DemoResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
