"""Set, list or remove the human label of an SAE feature (``workdir/feature_labels.json``).

    python -m apps.label --workdir=W --feature=F --name="SCU stacker" \\
        [--category=tactical] [--notes="..."]
    python -m apps.label --workdir=W --list [--feature=F]
    python -m apps.label --workdir=W --feature=F --remove

Categories: none, mechanical, tactical, strategic. The feature id is checked
against the run's SAE. A mistake prints one ``error:`` line and exits 1.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from runkit.cli import report_user_errors, run_with_flagfiles
from runkit.run_dir import RunDir
from sae_jax.feature_labels import (
    CATEGORIES,
    check_feature,
    format_labels,
    read_labels,
    remove_label,
    set_label,
)
from sae_jax.model import SAEConfig


def define_flags() -> None:
    """Flags are defined only when run as a program, so importing this module defines none."""
    flags.DEFINE_string("workdir", None, "SAE run directory (holds sae/); required.")
    flags.DEFINE_integer("feature", None, "Feature id (0 .. SAE features - 1); needed by "
                         "--name and --remove (default with --list: every feature).")
    flags.DEFINE_string("name", None, "Set the feature's label to this name (default: none; "
                        "give one of --name, --list or --remove).")
    flags.DEFINE_string("category", None, f"The label's category, one of "
                        f"{', '.join(CATEGORIES)} (default: none, or the label's current one).")
    flags.DEFINE_string("notes", None, "Free-text notes (default: empty, or the current ones).")
    flags.DEFINE_bool("list", False, "Print the labels (only --feature's when given).")
    flags.DEFINE_bool("remove", False, "Remove --feature's label.")
    flags.mark_flag_as_required("workdir")


def label_command(workdir, *, feature=None, name=None, category=None, notes=None,
                  list_labels=False, remove=False) -> str:
    """What ``python -m apps.label`` does; returns the text it prints."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise FileNotFoundError(f"--workdir {workdir} is not a directory")
    modes = [m for m, on in (("--name", name is not None), ("--list", list_labels),
                             ("--remove", remove)) if on]
    if len(modes) != 1:
        raise ValueError("give exactly one of --name (set a label), --list or --remove"
                         + (f"; got {' and '.join(modes)}" if modes else ""))
    if (category is not None or notes is not None) and name is None:
        raise ValueError("--category and --notes go with --name")
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"--category {category!r} is not one of {', '.join(CATEGORIES)}")
    run = RunDir(workdir)
    num_features = SAEConfig(**run.sae_config()).hidden_dim
    if feature is not None:
        check_feature(feature, num_features, where=f"--feature ({run.sae_dir})")
    elif not list_labels:
        raise ValueError(f"{modes[0]} needs --feature")
    if list_labels:
        labels = read_labels(run.labels_path, num_features=num_features)
        if feature is not None:
            labels = {f: v for f, v in labels.items() if f == feature}
        return format_labels(labels)
    if remove:
        old = remove_label(run.labels_path, feature, num_features=num_features)
        return f"removed the label of feature {feature} ({old.name!r})"
    label = set_label(run.labels_path, feature, name, category=category, notes=notes,
                      num_features=num_features)
    return (f"feature {feature}: {label.name!r} ({label.category}) written to "
            f"{run.labels_path}")


@report_user_errors
def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    print(label_command(f.workdir, feature=f.feature, name=f.name, category=f.category,
                        notes=f.notes, list_labels=f.list, remove=f.remove))
    return 0


if __name__ == "__main__":
    define_flags()
    run_with_flagfiles(main)
