"""What a rerun on an existing workdir may change: nothing, unless told.

A workdir records the settings its run was started with (``train_config.json``). A
rerun with other settings is refused with the differences listed, since resuming
would silently mix two configurations. ``override=True`` accepts the change: the
run goes on under the new settings, ``train_config.json`` keeps the settings the run
was started with, and each accepted change is appended to ``config_changes.jsonl``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from runkit.jsonio import read_json, write_json

CONFIG_NAME = "train_config.json"
CHANGES_NAME = "config_changes.jsonl"


class SettingsChanged(ValueError):
    """A rerun's settings differ from those the workdir's run was started with."""


def settings_diff(recorded: dict, now: dict, defaults: dict | None = None) -> dict:
    """``{name: (recorded, now)}`` for every setting that differs (JSON-normalised, so a
    tuple and the list it was stored as compare equal). A setting the record lacks (the
    run predates it) counts as its value in ``defaults``, the one the run trained with."""
    now = json.loads(json.dumps(now))
    recorded = {**json.loads(json.dumps(defaults or {})), **recorded}
    names = sorted(set(recorded) | set(now))
    return {k: (recorded.get(k), now.get(k)) for k in names if recorded.get(k) != now.get(k)}


def effective_settings(workdir: str | os.PathLike) -> dict:
    """The settings the workdir's run goes on under: those it was started with, updated by
    every accepted change in order."""
    workdir = Path(workdir)
    settings = dict(read_json(workdir / CONFIG_NAME, what="run settings file"))
    changes = workdir / CHANGES_NAME
    if changes.exists():
        for line in changes.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill: that change was never trained with
            settings.update({k: v["now"] for k, v in entry.get("changes", {}).items()})
    return settings


def claim_settings(workdir: str | os.PathLike, settings: dict, *, override: bool = False,
                   write: bool = True, flag: str = "--override",
                   defaults: dict | None = None) -> dict:
    """Record ``settings`` in a new workdir, or check them against the recorded ones.

    Returns the accepted differences (empty when equal). Raises :class:`SettingsChanged`
    naming each difference when they differ and ``override`` is false. ``write``: whether
    this process writes files (process 0 of a multi-process run); ``defaults``: every
    setting's default, for settings added after the run was started (:func:`settings_diff`)."""
    workdir = Path(workdir)
    path = workdir / CONFIG_NAME
    if not path.exists():
        if write:
            write_json(path, settings)
        return {}
    diff = settings_diff(effective_settings(workdir), settings, defaults)
    if not diff:
        return {}
    shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
    if not override:
        raise SettingsChanged(
            f"{workdir} holds a run started with other settings ({shown}); use a fresh "
            f"--workdir, or pass {flag} to continue this run under the new settings")
    if write:
        with open(workdir / CHANGES_NAME, "a") as f:
            f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                "changes": {k: {"was": a, "now": b}
                                            for k, (a, b) in diff.items()}}) + "\n")
    print(f"note: continuing {workdir} under changed settings ({shown}); recorded in "
          f"{workdir / CHANGES_NAME}")
    return diff


def claim_config(workdir: str | os.PathLike, cfg, **kwargs) -> dict:
    """:func:`claim_settings` for a settings object: its ``to_dict()``, with its class's
    defaults (``type(cfg)().to_dict()``) standing in for settings added since the run was
    started, so that a run recorded before a new setting existed still matches."""
    return claim_settings(workdir, cfg.to_dict(), defaults=type(cfg)().to_dict(), **kwargs)
