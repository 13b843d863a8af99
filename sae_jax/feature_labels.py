"""Human feature labels: the label file format (a run's file is ``feature_labels.json``,
:attr:`runkit.run_dir.RunDir.labels_path`).

The file is SplatNLP's own label format, so its published label files (e.g.
``feature_labels_ultra.json``) load as they are::

    {"<feature id>": {"name": "SCU stacker", "category": "tactical",
                      "notes": "fires on 16+ AP of Special Charge Up",
                      "timestamp": "2026-12-01T05:30:00+00:00"}}

``category`` is one of :data:`CATEGORIES`. Keys of an entry beyond these four
are kept as they are when the file is read and written again. Only a person
writes this file (``python -m apps.label``, or importing SplatNLP's labels);
automatic explanations live in another file and never touch it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from runkit.jsonio import parse_json_file, write_json

CATEGORIES = ("none", "mechanical", "tactical", "strategic")
_FIELDS = ("name", "category", "notes", "timestamp")


class LabelError(ValueError):
    """A label, or a label file, that breaks the format (the message says where)."""


@dataclass(frozen=True)
class FeatureLabel:
    """One feature's label. ``extra``: the entry's other keys, kept for round trips."""

    name: str
    category: str = "none"
    notes: str = ""
    timestamp: str = ""
    extra: Mapping = field(default_factory=dict)

    def __post_init__(self):
        for name in _FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str):
                raise LabelError(f"label field {name!r} must be a string, got "
                                 f"{json.dumps(value, default=repr)}")
        if self.category not in CATEGORIES:
            raise LabelError(f"unknown label category {self.category!r}; categories: "
                             f"{', '.join(CATEGORIES)}")

    def to_json(self) -> dict:
        return {**self.extra, "name": self.name, "category": self.category,
                "notes": self.notes, "timestamp": self.timestamp}

    @classmethod
    def from_json(cls, raw, *, where: str = "label") -> FeatureLabel:
        if not isinstance(raw, dict):
            raise LabelError(f"{where}: expected an object with name, category, notes, "
                             f"timestamp; got {json.dumps(raw)[:60]}")
        if "name" not in raw:
            raise LabelError(f"{where}: field 'name' is missing")
        values = {k: raw[k] for k in _FIELDS if k in raw}  # absent ones take the defaults
        extra = {k: v for k, v in raw.items() if k not in _FIELDS}
        try:
            return cls(**values, extra=extra)
        except LabelError as e:
            raise LabelError(f"{where}: {e}") from None


def now_timestamp() -> str:
    """The current UTC time as ISO 8601 (what a label records as ``timestamp``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _feature_id(key, *, where: str, num_features: int | None) -> int:
    text = str(key).strip()
    if not text.isdigit():
        raise LabelError(f"{where}: feature id {key!r} is not a non-negative integer")
    feature = int(text)
    check_feature(feature, num_features, where=where)
    return feature


def check_feature(feature: int, num_features: int | None, *, where: str = "label") -> None:
    """Refuse a feature id outside ``0 .. num_features - 1`` (no bound when None)."""
    if feature < 0 or (num_features is not None and feature >= num_features):
        bound = f" (0..{num_features - 1})" if num_features else ""
        raise LabelError(f"{where}: feature {feature} is out of range: the SAE has "
                         f"{num_features} features{bound}")


def parse_labels(data, *, source: str = "labels",
                 num_features: int | None = None) -> dict[int, FeatureLabel]:
    """Parsed JSON in the label format -> ``{feature: FeatureLabel}``; errors name the
    source, the feature and the field."""
    if not isinstance(data, dict):
        raise LabelError(f"{source}: expected an object keyed by feature id, got "
                         f"{type(data).__name__}")
    labels = {}
    for key, raw in data.items():
        feature = _feature_id(key, where=source, num_features=num_features)
        if feature in labels:
            raise LabelError(f"{source}: feature {feature} is labelled twice")
        labels[feature] = FeatureLabel.from_json(raw, where=f"{source}: feature {key}")
    return labels


def read_labels(path: str | os.PathLike, *, num_features: int | None = None,
                missing_ok: bool = True) -> dict[int, FeatureLabel]:
    """The labels in ``path`` ({} when it does not exist and ``missing_ok``)."""
    path = Path(path)
    if missing_ok and not path.exists():
        return {}
    data = parse_json_file(path, what="label file", error=LabelError)
    return parse_labels(data, source=str(path), num_features=num_features)


def labels_to_json(labels: Mapping[int, FeatureLabel]) -> dict:
    """``{feature: label}`` -> the file's dict, keys as strings in feature order."""
    return {str(f): labels[f].to_json() for f in sorted(labels)}


def write_labels(path: str | os.PathLike, labels: Mapping[int, FeatureLabel]) -> Path:
    """Write the whole label file atomically (a kill leaves the old file or the new one)."""
    return write_json(path, labels_to_json(labels))


# ------------------------------------------------------------------ changes to a label file

# What a person types as a label; files written elsewhere are read as they are.
MAX_NAME_CHARS = 200
MAX_NOTES_CHARS = 5_000


def _check_text(field_name: str, value, limit: int) -> None:
    if not isinstance(value, str):
        raise LabelError(f"label {field_name} must be a string, got "
                         f"{json.dumps(value, default=repr)}")
    if len(value) > limit:
        raise LabelError(f"label {field_name} is {len(value):,} characters, more than "
                         f"{limit:,}")
    bad = next((c for c in value if ord(c) < 32 and c not in "\n\t"), None)
    if bad is not None:
        raise LabelError(f"label {field_name} holds the control character {bad!r}")


def set_label(path: str | os.PathLike, feature: int, name: str, *,
              category: str | None = None, notes: str | None = None,
              num_features: int | None = None, timestamp: str | None = None) -> FeatureLabel:
    """Label ``feature`` in the label file ``path`` (a run's is
    :attr:`runkit.run_dir.RunDir.labels_path`), or relabel it: ``category`` / ``notes``
    left None keep the old ones, a new label gets "none" / ""; returns the stored label."""
    if not isinstance(name, str) or not name.strip():
        raise LabelError("a label needs a non-empty name")
    _check_text("name", name, MAX_NAME_CHARS)
    if notes is not None:
        _check_text("notes", notes, MAX_NOTES_CHARS)
    check_feature(int(feature), num_features, where="label")
    labels = read_labels(path, num_features=num_features)
    old = labels.get(int(feature), FeatureLabel(name))
    try:
        label = replace(old, name=name.strip(),
                        category=old.category if category is None else category,
                        notes=old.notes if notes is None else notes,
                        timestamp=timestamp or now_timestamp())
    except LabelError as e:
        raise LabelError(f"feature {feature}: {e}") from None
    labels[int(feature)] = label
    write_labels(path, labels)
    return label


def remove_label(path: str | os.PathLike, feature: int, *,
                 num_features: int | None = None) -> FeatureLabel:
    """Remove ``feature``'s label from the label file ``path``; returns it. A feature
    without a label is an error."""
    labels = read_labels(path, num_features=num_features)
    if int(feature) not in labels:
        raise LabelError(f"feature {feature} has no label in {path}")
    removed = labels.pop(int(feature))
    write_labels(path, labels)
    return removed


def import_labels(source: str | os.PathLike, path: str | os.PathLike, *,
                  num_features: int | None = None, overwrite: bool = False) -> dict:
    """Merge a label file (e.g. SplatNLP's ``feature_labels_ultra.json``) into the label
    file ``path``. Features it already labels are kept unless ``overwrite``. Returns
    ``{"imported": n, "kept": n}``."""
    incoming = read_labels(source, num_features=num_features, missing_ok=False)
    labels = read_labels(path, num_features=num_features)
    kept = 0
    for feature, label in incoming.items():
        if feature in labels and not overwrite:
            kept += 1
            continue
        labels[feature] = label
    write_labels(path, labels)
    return {"imported": len(incoming) - kept, "kept": kept}


def format_labels(labels: Mapping[int, FeatureLabel]) -> str:
    """One line per label: feature, category, name, notes."""
    if not labels:
        return "no labels"
    rows = [f"{f:>6}  {labels[f].category:<10}  {labels[f].name}"
            + (f"  -- {labels[f].notes}" if labels[f].notes else "") for f in sorted(labels)]
    return "\n".join(rows)
