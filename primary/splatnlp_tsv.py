"""Reader for SplatNLP's tokenized TSV: builds as token ids, back to AP.

Tab-separated with a header; ``ability_tags`` holds a JSON list of ability
token ids and ``weapon_id`` the weapon token id, both read with the run's own
``vocab.json`` / ``weapon_vocab.json``. Each ability gets the lower bound of
the AP range its tokens imply (main-only abilities 10), so the build
tokenises back to the same token set; ``<PAD>`` and ``<NULL>`` are dropped.
Such builds are not full 57-AP builds in general. Any bad id or token is an
error naming the line.
"""

from __future__ import annotations

import csv
import json
import os
import sys

import numpy as np

from primary.builds import BuildSet
from primary.vocab import ABILITY_INDEX, BuildError, Vocab, WeaponVocab, detokenize

NEEDED_COLUMNS = ("ability_tags", "weapon_id")


def _parse_ids(text: str, where: str) -> list[int]:
    text = (text or "").strip()
    try:
        ids = json.loads(text) if text.startswith("[") else [int(t) for t in text.split()]
    except (json.JSONDecodeError, ValueError):
        raise ValueError(f"{where}: ability_tags {text!r} is not a list of token ids") from None
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in ids
    ):
        raise ValueError(f"{where}: ability_tags {text!r} is not a list of integer token ids")
    return ids


def read_splatnlp_tsv(path: str | os.PathLike, vocab: Vocab, weapon_vocab: WeaponVocab
                      ) -> BuildSet:
    """Every line of the TSV as a build (weapons as game ids, AP from token lower bounds)."""
    path = str(path)
    weapons: list[int] = []
    rows: list[np.ndarray] = []
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = [c for c in NEEDED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} is not a SplatNLP tokenized TSV: missing columns "
                             f"{', '.join(missing)}")
        for row in reader:
            where = f"{path} line {reader.line_num}"
            ids = _parse_ids(row["ability_tags"], where)
            for i in ids:
                if not 0 <= i < len(vocab):
                    raise ValueError(f"{where}: token id {i} is outside [0, {len(vocab)}) "
                                     f"of {vocab.source}")
            try:
                wid = int((row["weapon_id"] or "").strip())
            except ValueError:
                raise ValueError(f"{where}: weapon_id {row['weapon_id']!r} is not an "
                                 f"integer") from None
            if not 0 <= wid < len(weapon_vocab):
                raise ValueError(f"{where}: weapon id {wid} is outside [0, {len(weapon_vocab)}) "
                                 f"of {weapon_vocab.source}")
            try:
                ranges = detokenize(vocab.decode(ids, skip_pad=True))
            except BuildError as e:
                raise ValueError(f"{where}: {e}") from None
            ap = np.zeros(len(ABILITY_INDEX), np.int16)
            for r in ranges:
                ap[ABILITY_INDEX[r.ability]] = r.low
            weapons.append(int(weapon_vocab.game_ids[wid]))
            rows.append(ap)
    if not rows:
        raise ValueError(f"{path} holds no builds")
    return BuildSet(np.array(weapons, np.int32), np.stack(rows))


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
