"""Reader for SplatNLP's tokenized TSV: builds as token ids, back to AP.

Tab-separated with a header; ``ability_tags`` holds a JSON list of ability
token ids and ``weapon_id`` the weapon token id, both read with the run's own
``vocab.json`` / ``weapon_vocab.json``. Each ability gets the lower bound of
the AP range its tokens imply (main-only abilities 10), so the build
tokenises back to the same token set; ``<PAD>`` and ``<NULL>`` are dropped.
Such builds are not full 57-AP builds in general. Any bad id or token is an
error naming the file, line and column, quoting at most :data:`QUOTE_CHARS`
characters of the bad field.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from primary.builds import BuildSet
from primary.vocab import ABILITY_INDEX, BuildError, Vocab, WeaponVocab, detokenize

NEEDED_COLUMNS = ("ability_tags", "weapon_id")
# A row holds a few dozen token ids; a field past this many characters is not SplatNLP
# data and is refused (the csv module's limit is global, so it is restored after a read).
MAX_FIELD_CHARS = 1 << 20
QUOTE_CHARS = 200  # at most this much of a bad field goes into an error message


def _quote(value) -> str:
    """``repr`` of a bad value, cut to :data:`QUOTE_CHARS` characters with an ellipsis."""
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) <= QUOTE_CHARS:
        return text
    return f"{text[:QUOTE_CHARS]}... ({len(text):,} characters)"


def _parse_ids(text: str, where: str) -> list[int]:
    text = (text or "").strip()
    try:
        ids = json.loads(text) if text.startswith("[") else [int(t) for t in text.split()]
    except (ValueError, RecursionError):  # bad JSON or integer, deep nesting
        raise ValueError(f"{where}: column ability_tags: {_quote(text)} is not a list of "
                         "token ids") from None
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in ids
    ):
        raise ValueError(f"{where}: column ability_tags: {_quote(text)} is not a list of "
                         "integer token ids")
    return ids


def read_splatnlp_tsv(path: str | os.PathLike, vocab: Vocab, weapon_vocab: WeaponVocab
                      ) -> BuildSet:
    """Every line of the TSV as a build (weapons as game ids, AP from token lower bounds)."""
    path = str(path)
    weapons: list[int] = []
    rows: list[np.ndarray] = []
    old_limit = csv.field_size_limit(MAX_FIELD_CHARS)
    done = 0  # lines of the file read into complete rows
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t")
            missing = [c for c in NEEDED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path} is not a SplatNLP tokenized TSV: missing columns "
                                 f"{', '.join(missing)}")
            done = reader.line_num
            for row in reader:
                weapon, ap = _read_row(row, f"{path} line {reader.line_num}", vocab,
                                       weapon_vocab)
                weapons.append(weapon)
                rows.append(ap)
                done = reader.line_num
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text after line {done} ({e.reason})") from None
    except csv.Error as e:
        raise ValueError(f"{path} line {done + 1}: malformed TSV: {e}") from None
    finally:
        csv.field_size_limit(old_limit)
    if not rows:
        raise ValueError(f"{path} holds no builds")
    return BuildSet(np.array(weapons, np.int32), np.stack(rows))


def _read_row(row: dict, where: str, vocab: Vocab, weapon_vocab: WeaponVocab
              ) -> tuple[int, np.ndarray]:
    """``(weapon game id, (26,) AP)`` of one row; any bad value is an error naming ``where``
    (file and line) and the column."""
    ids = _parse_ids(row["ability_tags"], where)
    for i in ids:
        if not 0 <= i < len(vocab):
            raise ValueError(f"{where}: column ability_tags: token id {_quote(i)} is outside "
                             f"[0, {len(vocab)}) of {vocab.source}")
    try:
        wid = int((row["weapon_id"] or "").strip())
    except ValueError:
        raise ValueError(f"{where}: column weapon_id: weapon_id {_quote(row['weapon_id'])} is "
                         "not an integer") from None
    if not 0 <= wid < len(weapon_vocab):
        raise ValueError(f"{where}: column weapon_id: weapon id {_quote(wid)} is outside "
                         f"[0, {len(weapon_vocab)}) of {weapon_vocab.source}")
    try:
        ranges = detokenize(vocab.decode(ids, skip_pad=True))
    except BuildError as e:
        raise ValueError(f"{where}: column ability_tags: {e}") from None
    ap = np.zeros(len(ABILITY_INDEX), np.int16)
    for r in ranges:
        ap[ABILITY_INDEX[r.ability]] = r.low
    return int(weapon_vocab.game_ids[wid]), ap


def write_splatnlp_tsv(path: str | os.PathLike, builds: BuildSet, vocab: Vocab,
                       weapon_vocab: WeaponVocab) -> None:
    """Write builds in the same format (``ability_tags``, ``weapon_id``), for tests and export."""
    weapon_ids = weapon_vocab.encode_game_ids(builds.weapons, where="write_splatnlp_tsv")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["ability_tags", "weapon_id"])
        for i in range(len(builds)):
            ids = vocab.encode(builds.tokens(i), where=f"build {i}")
            writer.writerow([json.dumps(ids), int(weapon_ids[i])])
