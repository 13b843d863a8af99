"""Concept sets: the concepts a synthetic world plants, read from and written to JSON.

The built-in set is :data:`primary.planted_concepts.CONCEPTS`. A custom set is a JSON
file holding a list of objects::

    [{"name": "stealth_slayer",
      "description": "Ninja Squid with heavy Swim Speed.",
      "required": {"ninja_squid": 10, "swim_speed_up": 16},
      "favoured": {"quick_super_jump": 2.0},
      "weapon_classes": {"shooter": 3, "dualie": 3}}]

``name`` and ``required`` are needed; ``description`` (text), ``favoured``
(ability -> filler weight >= 0) and ``weapon_classes`` (class -> affinity >= 0,
unnamed classes get :data:`primary.planted_concepts.OTHER_CLASS_AFFINITY`) may be left
out. ``required`` maps abilities to the minimum AP a labelled build holds: 10
for a main-only ability, 1..29 for a standard one, and the whole requirement
must fit one build. An ability may be named as :func:`primary.vocab.resolve_ability`
takes it (``swim_speed_up``, ``Swim Speed Up``, ``SquidMove_Up``, any case); the set
holds the project's names. A bad file is an error naming the file, the concept (its
name, or its index when it has none) and the field.

A primary model directory records the set its builds were drawn with in
``concept_set.json`` (same format); a directory without one was made with the
built-in set.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from primary.allocator import allocate
from primary.planted_concepts import CONCEPTS, Concept
from primary.vocab import MAIN_AP, PIECE_OF_MAIN_ONLY, BuildError, resolve_abilities
from primary.weapons import WEAPON_CLASSES
from runkit.jsonio import parse_json_file, write_json

CONCEPT_SET_FILE = "concept_set.json"
FIELDS = ("name", "description", "required", "favoured", "weapon_classes")
MAX_STANDARD_AP = 29  # the bound primary.planted_concepts.Concept applies


class ConceptSetError(ValueError):
    """A concept set file that cannot be used (the message names file, concept and field)."""


def concepts_to_json(concepts: Sequence[Concept]) -> list[dict]:
    """The set as JSON-ready dicts (the file format); numbers normalised so that a set read
    back from its own output is equal to it."""
    return [{"name": c.name, "description": c.description,
             "required": {a: int(v) for a, v in c.required.items()},
             "favoured": {a: float(v) for a, v in c.favoured.items()},
             "weapon_classes": {k: float(v) for k, v in c.weapon_classes.items()}}
            for c in concepts]


def concept_set_key(concepts: Sequence[Concept]) -> str:
    """A canonical text of the set: equal sets give equal keys."""
    return json.dumps(concepts_to_json(concepts), sort_keys=True, separators=(",", ":"))


def concept_set_digest(concepts: Sequence[Concept]) -> str:
    """sha256 (hex) of :func:`concept_set_key`: what run settings record of a set."""
    return hashlib.sha256(concept_set_key(concepts).encode()).hexdigest()


def is_builtin(concepts: Sequence[Concept]) -> bool:
    return concept_set_key(concepts) == _BUILTIN_KEY


def recorded_digest(concepts: Sequence[Concept]) -> str:
    """What run settings record as ``concept_set_sha256``: "" for the built-in set (so runs
    recorded before concept sets existed still match), else :func:`concept_set_digest`."""
    return "" if is_builtin(concepts) else concept_set_digest(concepts)


# ------------------------------------------------------------------ reading and checking

def _number(value, *, where: str, what: str, integer: bool = False):
    # bool is an int subclass in Python; true/false in a JSON file is a type mistake
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConceptSetError(f"{where}: {what} must be a number, got {json.dumps(value)}")
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        raise ConceptSetError(f"{where}: {what} must be a whole number of AP, got {value}")
    if not math.isfinite(value):
        raise ConceptSetError(f"{where}: {what} must be finite, got {value}")
    return int(value) if integer else float(value)


def _mapping(entry: dict, field: str, *, where: str) -> dict:
    value = entry.get(field, {})
    if not isinstance(value, dict):
        raise ConceptSetError(f"{where}: field {field!r} must be an object "
                              f"({{name: number}}), got {json.dumps(value)}")
    return value


def _abilities(raw: dict, *, where: str, field: str) -> dict:
    """``raw`` with each ability named by the project's name (any name
    :func:`resolve_ability` takes); two names of one ability are an error."""
    try:
        return resolve_abilities(raw, where=f"{where}: field {field!r}")
    except BuildError as e:
        raise ConceptSetError(str(e)) from None


def _required(entry: dict, *, where: str) -> dict[str, int]:
    raw = _abilities(_mapping(entry, "required", where=where), where=where, field="required")
    if not raw:
        raise ConceptSetError(f"{where}: field 'required' is empty: a concept must require "
                              "at least one ability")
    required, piece_of = {}, {}
    for a, ap in raw.items():
        ap = _number(ap, where=where, what=f"field 'required': AP of {a!r}", integer=True)
        if a in PIECE_OF_MAIN_ONLY:
            if ap != MAIN_AP:
                raise ConceptSetError(f"{where}: field 'required': main-only ability {a!r} "
                                      f"gives exactly {MAIN_AP} AP, got {ap}")
            piece = PIECE_OF_MAIN_ONLY[a]
            if piece in piece_of:
                raise ConceptSetError(
                    f"{where}: field 'required': main-only abilities {piece_of[piece]!r} and "
                    f"{a!r} both need the {piece} main slot")
            piece_of[piece] = a
        elif not 1 <= ap <= MAX_STANDARD_AP:
            raise ConceptSetError(f"{where}: field 'required': AP of {a!r} must be in "
                                  f"1..{MAX_STANDARD_AP}, got {ap}")
        required[a] = ap
    fit = allocate(required)
    if not fit.feasible:
        raise ConceptSetError(f"{where}: field 'required' does not fit one build: {fit.reason}")
    return required


def _weights(entry: dict, field: str, *, where: str, known, what: str) -> dict[str, float]:
    """``known``: the valid keys, or None for abilities (any name :func:`_abilities` takes)."""
    out = {}
    raw = _mapping(entry, field, where=where)
    if known is None:
        raw = _abilities(raw, where=where, field=field)
    for k, w in raw.items():
        if known is not None and k not in known:
            raise ConceptSetError(f"{where}: field {field!r}: unknown {what} {k!r}; known: "
                                  f"{', '.join(known)}")
        w = _number(w, where=where, what=f"field {field!r}: weight of {k!r}")
        if w < 0:
            raise ConceptSetError(f"{where}: field {field!r}: weight of {k!r} must be >= 0, "
                                  f"got {w}")
        out[k] = w
    return out


def _concept(entry, index: int, *, source: str) -> Concept:
    if not isinstance(entry, dict):
        raise ConceptSetError(f"{source}: concept {index}: expected an object, got "
                              f"{json.dumps(entry)[:60]}")
    name = entry.get("name")
    where = f"{source}: concept {index}" + (f" ({name!r})" if isinstance(name, str) else "")
    if "name" not in entry:
        raise ConceptSetError(f"{where}: field 'name' is missing")
    if not isinstance(name, str) or not name.strip():
        raise ConceptSetError(f"{where}: field 'name' must be a non-empty string, got "
                              f"{json.dumps(name)}")
    where = f"{source}: concept {name!r}"
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise ConceptSetError(f"{where}: unknown field(s) {unknown}; fields are "
                              f"{', '.join(FIELDS)}")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise ConceptSetError(f"{where}: field 'description' must be a string, got "
                              f"{json.dumps(description)}")
    if "required" not in entry:
        raise ConceptSetError(f"{where}: field 'required' is missing")
    required = _required(entry, where=where)
    favoured = _weights(entry, "favoured", where=where, known=None, what="ability")
    classes = _weights(entry, "weapon_classes", where=where, known=WEAPON_CLASSES,
                       what="weapon class")
    if len(classes) == len(WEAPON_CLASSES) and not any(classes.values()):
        raise ConceptSetError(f"{where}: field 'weapon_classes' gives every class affinity 0: "
                              "the concept would never be drawn")
    try:
        return Concept(name, description, required, favoured, classes)
    except ValueError as e:  # the checks above should have caught it; name the file anyway
        raise ConceptSetError(f"{source}: {e}") from None


def concepts_from_json(data, *, source: str = "concept set") -> tuple[Concept, ...]:
    """Parsed JSON (a list of concept objects) -> concepts; errors name ``source``."""
    if not isinstance(data, list):
        raise ConceptSetError(f"{source}: expected a list of concept objects, got "
                              f"{type(data).__name__}")
    if not data:
        raise ConceptSetError(f"{source}: the list of concepts is empty")
    concepts = tuple(_concept(entry, i, source=source) for i, entry in enumerate(data))
    first = {}
    for i, c in enumerate(concepts):
        if c.name in first:
            raise ConceptSetError(f"{source}: concept {i}: duplicate name {c.name!r} (also "
                                  f"concept {first[c.name]})")
        first[c.name] = i
    return concepts


def load_concept_set(path: str | os.PathLike) -> tuple[Concept, ...]:
    """The concepts of a concept set file (see the module docstring)."""
    data = parse_json_file(path, what="concept set file", error=ConceptSetError)
    return concepts_from_json(data, source=str(path))


def resolve_concepts(spec=None) -> tuple[Concept, ...]:
    """None or "" -> the built-in set; a path -> that file's set; concepts -> as a tuple."""
    if spec is None or (isinstance(spec, str) and not spec):
        return CONCEPTS
    if isinstance(spec, (str, os.PathLike)):
        return load_concept_set(spec)
    concepts = tuple(spec)
    if not concepts or not all(isinstance(c, Concept) for c in concepts):
        raise TypeError("concepts must be a non-empty sequence of Concept, a concept set file "
                        f"path or None, got {spec!r}")
    return concepts


def describe_concept_set(concepts: Sequence[Concept]) -> str:
    """"the built-in set" or "N concepts (name, name, ...)", for messages."""
    if is_builtin(concepts):
        return f"the built-in set of {len(concepts)} concepts"
    names = ", ".join(c.name for c in concepts[:4]) + (" ..." if len(concepts) > 4 else "")
    return f"a custom set of {len(concepts)} concepts ({names})"


# ------------------------------------------------------------------ model directories

def write_concept_set(directory: str | os.PathLike, concepts: Sequence[Concept]) -> Path:
    """Record ``concepts`` in ``directory/concept_set.json`` (atomically)."""
    return write_json(Path(directory) / CONCEPT_SET_FILE, concepts_to_json(concepts))


def recorded_concept_set(directory: str | os.PathLike) -> tuple[Concept, ...] | None:
    """The set recorded in ``directory/concept_set.json``, or None when there is none."""
    path = Path(directory) / CONCEPT_SET_FILE
    if not path.exists():
        return None
    return load_concept_set(path)


_BUILTIN_KEY = concept_set_key(CONCEPTS)
