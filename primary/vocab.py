"""Gear-build vocabulary: abilities, tokenisation, and the original's vocab files.

A build is ``{ability_name: AP}``. Three gear pieces each hold one main slot
(10 AP) and three sub slots (3 AP): 57 AP in a full build. Standard abilities
are tokenised into cumulative AP buckets (``swim_speed_up_3``, ``_6``, ...);
main-only abilities give one token each.

Bulk data is handled as an AP matrix ``ap: Int[ndarray, "n 26"]`` whose
columns follow :data:`ABILITIES` (main-only first, then standard), so that
whole datasets are tokenised with vectorised numpy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from runkit.jsonio import read_json, write_json

MAIN_ONLY_BY_PIECE: dict[str, tuple[str, ...]] = {
    "head": ("comeback", "last_ditch_effort", "opening_gambit", "tenacity"),
    "clothes": ("ability_doubler", "haunt", "ninja_squid", "respawn_punisher", "thermal_ink"),
    "shoes": ("drop_roller", "object_shredder", "stealth_jump"),
}
GEAR_PIECES: tuple[str, ...] = ("head", "clothes", "shoes")
MAIN_ONLY_ABILITIES: tuple[str, ...] = tuple(a for p in GEAR_PIECES for a in MAIN_ONLY_BY_PIECE[p])
PIECE_OF_MAIN_ONLY: dict[str, str] = {a: p for p, abil in MAIN_ONLY_BY_PIECE.items() for a in abil}
STANDARD_ABILITIES: tuple[str, ...] = (
    "ink_recovery_up",
    "ink_resistance_up",
    "ink_saver_main",
    "ink_saver_sub",
    "intensify_action",
    "quick_respawn",
    "quick_super_jump",
    "run_speed_up",
    "special_charge_up",
    "special_power_up",
    "special_saver",
    "sub_power_up",
    "sub_resistance_up",
    "swim_speed_up",
)
# Column order of every AP matrix in the project.
ABILITIES: tuple[str, ...] = MAIN_ONLY_ABILITIES + STANDARD_ABILITIES
ABILITY_INDEX: dict[str, int] = {a: i for i, a in enumerate(ABILITIES)}
AP_THRESHOLDS: tuple[int, ...] = (3, 6, 12, 15, 21, 29, 38, 51, 57)
MAIN_AP, SUB_AP, SUBS_PER_PIECE = 10, 3, 3
MAX_AP = 3 * MAIN_AP + 3 * SUBS_PER_PIECE * SUB_AP  # 57

# How the game names each ability: its US English name and its internal code.
ABILITY_NAMES: dict[str, str] = {
    "comeback": "Comeback", "last_ditch_effort": "Last-Ditch Effort",
    "opening_gambit": "Opening Gambit", "tenacity": "Tenacity",
    "ability_doubler": "Ability Doubler", "haunt": "Haunt", "ninja_squid": "Ninja Squid",
    "respawn_punisher": "Respawn Punisher", "thermal_ink": "Thermal Ink",
    "drop_roller": "Drop Roller", "object_shredder": "Object Shredder",
    "stealth_jump": "Stealth Jump", "ink_recovery_up": "Ink Recovery Up",
    "ink_resistance_up": "Ink Resistance Up", "ink_saver_main": "Ink Saver (Main)",
    "ink_saver_sub": "Ink Saver (Sub)", "intensify_action": "Intensify Action",
    "quick_respawn": "Quick Respawn", "quick_super_jump": "Quick Super Jump",
    "run_speed_up": "Run Speed Up", "special_charge_up": "Special Charge Up",
    "special_power_up": "Special Power Up", "special_saver": "Special Saver",
    "sub_power_up": "Sub Power Up", "sub_resistance_up": "Sub Resistance Up",
    "swim_speed_up": "Swim Speed Up",
}
ABILITY_CODES: dict[str, str] = {
    "comeback": "ComeBack", "last_ditch_effort": "EndAllUp", "opening_gambit": "StartAllUp",
    "tenacity": "MinorityUp", "ability_doubler": "ExSkillDouble", "haunt": "DeathMarking",
    "ninja_squid": "SquidMoveSpatter_Reduction", "respawn_punisher": "Exorcist",
    "thermal_ink": "ThermalInk", "drop_roller": "SomersaultLanding",
    "object_shredder": "ObjectEffect_Up", "stealth_jump": "SuperJumpSign_Hide",
    "ink_recovery_up": "InkRecovery_Up", "ink_resistance_up": "OpInkEffect_Reduction",
    "ink_saver_main": "MainInk_Save", "ink_saver_sub": "SubInk_Save",
    "intensify_action": "Action_Up", "quick_respawn": "RespawnTime_Save",
    "quick_super_jump": "JumpTime_Save", "run_speed_up": "HumanMove_Up",
    "special_charge_up": "SpecialIncrease_Up", "special_power_up": "SpecialSpec_Up",
    "special_saver": "RespawnSpecialGauge_Save", "sub_power_up": "SubSpec_Up",
    "sub_resistance_up": "SubEffect_Reduction", "swim_speed_up": "SquidMove_Up",
}
if set(ABILITY_NAMES) != set(ABILITIES) or set(ABILITY_CODES) != set(ABILITIES):
    raise ValueError("ABILITY_NAMES and ABILITY_CODES must name every ability")

PAD, NULL, MASK = "<PAD>", "<NULL>", "<MASK>"
# The 138 ability tokens in tokenisation order.
ABILITY_TOKENS: tuple[str, ...] = MAIN_ONLY_ABILITIES + tuple(
    f"{a}_{t}" for a in STANDARD_ABILITIES for t in AP_THRESHOLDS
)


class BuildError(ValueError):
    """A build that breaks the game's rules or names something unknown."""


class UnknownAbilityError(BuildError, KeyError):
    """An ability name that no ability has."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def _ability_texts() -> dict[str, tuple[str, str]]:
    """Every text that names an ability, case-folded -> (the text, the project's name)."""
    out = {}
    for a in ABILITIES:
        for t in (a, ABILITY_NAMES[a], ABILITY_CODES[a]):
            out[t.casefold()] = (t, a)
    return out


_ABILITY_TEXTS = _ability_texts()


def resolve_ability(text, *, where: str = "ability") -> str:
    """The project's name (``swim_speed_up``, also stat.ink's key) of the ability ``text``
    names: that name, the English name (``Swim Speed Up``) or the game's internal code
    (``SquidMove_Up``), any case. :class:`UnknownAbilityError` names the value and
    ``where`` otherwise, with the closest names for a near miss."""
    if isinstance(text, str):
        hit = _ABILITY_TEXTS.get(text.strip().casefold())
        if hit is not None:
            return hit[1]
    import difflib

    close = difflib.get_close_matches(str(text).strip().casefold(), list(_ABILITY_TEXTS), n=3,
                                      cutoff=0.75)
    # Each near ability once, spelt the way the user wrote (name, English name or code).
    shown: dict[str, str] = {}
    for c in close:
        t, a = _ABILITY_TEXTS[c]
        shown.setdefault(a, repr(t) if t == ABILITY_NAMES[a] else f"{t!r} ({ABILITY_NAMES[a]})")
    hint = f" (did you mean {' or '.join(shown.values())}?)" if shown else ""
    raise UnknownAbilityError(f"{where}: unknown ability {text!r}{hint}; an ability's name "
                              "(swim_speed_up), English name (Swim Speed Up) or game code "
                              "(SquidMove_Up)")


def resolve_abilities(build: Mapping, *, where: str = "abilities") -> dict:
    """``{ability text: value}`` with every key resolved (:func:`resolve_ability`); two keys
    naming one ability are an error."""
    out: dict = {}
    seen: dict[str, object] = {}
    for key, value in build.items():
        a = resolve_ability(key, where=where)
        if a in out:
            raise BuildError(f"{where}: {seen[a]!r} and {key!r} both name {a!r}")
        out[a], seen[a] = value, key
    return out


def ability_table_text() -> str:
    """Every ability, one a line: name, English name, game code, and main-only piece."""
    rows = [(a, ABILITY_NAMES[a], ABILITY_CODES[a],
             f"main slot of {PIECE_OF_MAIN_ONLY[a]} only" if a in PIECE_OF_MAIN_ONLY else "")
            for a in ABILITIES]
    head = ("ability", "English name", "game code", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)] + [0]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in [head, *rows])


def _check_build(build: Mapping[str, int], where: str) -> None:
    total = 0
    for name, ap in build.items():
        if name not in ABILITY_INDEX:
            raise BuildError(f"unknown ability {name!r} in {where}")
        if isinstance(ap, bool) or not isinstance(ap, (int, np.integer)):
            raise BuildError(f"AP of {name!r} must be an integer, got {ap!r} in {where}")
        if ap < 0:
            raise BuildError(f"AP of {name!r} is negative ({ap}) in {where}")
        total += int(ap)
    if total > MAX_AP:
        raise BuildError(f"build totals {total} AP, over the maximum {MAX_AP}, in {where}")


def tokenize_build(build: Mapping[str, int], *, where: str = "build") -> list[str]:
    """Tokens of a build ``{ability: AP}``, in the original's order.

    Main-only abilities (any AP > 0) first in list order, then each standard
    ability's cumulative thresholds ascending. An empty build is ``[<NULL>]``.
    """
    _check_build(build, where)
    tokens = [a for a in MAIN_ONLY_ABILITIES if build.get(a, 0) > 0]
    for a in STANDARD_ABILITIES:
        ap = int(build.get(a, 0))
        tokens.extend(f"{a}_{t}" for t in AP_THRESHOLDS if ap >= t)
    return tokens or [NULL]


@dataclass(frozen=True)
class AbilityRange:
    """What a token set says about one ability: AP in ``[low, high]``."""

    ability: str
    low: int
    high: int


def detokenize(tokens: Iterable[str]) -> list[AbilityRange]:
    """Inverse of :func:`tokenize_build`: each ability with the AP range its tokens imply."""
    best: dict[str, int] = {}
    for tok in tokens:
        if tok in (PAD, NULL, MASK):
            continue
        if tok in PIECE_OF_MAIN_ONLY:
            best[tok] = MAIN_AP
            continue
        base, _, thr = tok.rpartition("_")
        if base not in STANDARD_ABILITIES or not thr.isdigit() or int(thr) not in AP_THRESHOLDS:
            raise BuildError(f"unknown token {tok!r}")
        best[base] = max(best.get(base, 0), int(thr))
    out = []
    for a in ABILITIES:
        if a not in best:
            continue
        if a in PIECE_OF_MAIN_ONLY:
            out.append(AbilityRange(a, MAIN_AP, MAIN_AP))
            continue
        low = best[a]
        nxt = [t for t in AP_THRESHOLDS if t > low]
        out.append(AbilityRange(a, low, (nxt[0] - 1) if nxt else MAX_AP))
    return out


def builds_to_ap(builds: Sequence[Mapping[str, int]]) -> np.ndarray:
    """Stack builds into an ``(n, 26)`` int16 AP matrix (columns: :data:`ABILITIES`)."""
    ap = np.zeros((len(builds), len(ABILITIES)), np.int16)
    for i, b in enumerate(builds):
        _check_build(b, f"build {i}")
        for name, v in b.items():
            ap[i, ABILITY_INDEX[name]] = v
    return ap


def ap_to_build(ap_row: np.ndarray) -> dict[str, int]:
    """One AP row back to ``{ability: AP}`` (zeros left out)."""
    return {ABILITIES[i]: int(v) for i, v in enumerate(ap_row) if v > 0}


def ap_to_token_multihot(ap: np.ndarray) -> np.ndarray:
    """Vectorised tokenisation: ``(n, 26)`` AP -> ``(n, 138)`` bool over :data:`ABILITY_TOKENS`."""
    ap = np.asarray(ap)
    n_main = len(MAIN_ONLY_ABILITIES)
    main = ap[:, :n_main] > 0
    std = ap[:, n_main:, None] >= np.asarray(AP_THRESHOLDS)[None, None, :]
    return np.concatenate([main, std.reshape(len(ap), -1)], axis=1)


def visible_ap(ap: np.ndarray) -> np.ndarray:
    """The AP a build's tokens show: ``(..., 26)`` AP -> the same shape, each standard
    ability rounded down to the highest threshold it reaches (0 below the first),
    main-only abilities unchanged. Builds with equal visible AP have equal tokens: 12 and
    13 AP of an ability both read ``_12``, so the model cannot tell them apart."""
    ap = np.asarray(ap)
    n_main = len(MAIN_ONLY_ABILITIES)
    thresholds = np.asarray((0, *AP_THRESHOLDS))
    std = thresholds[np.searchsorted(thresholds, ap[..., n_main:], side="right") - 1]
    return np.concatenate([ap[..., :n_main], std.astype(ap.dtype)], axis=-1)


class Vocab:
    """A token -> id map in the original's ``vocab.json`` format.

    Ids may be in any order (the original's are data-dependent); ``<PAD>`` and
    ``<NULL>`` must be present.
    """

    def __init__(self, token_to_id: Mapping[str, int], *, source: str = "vocab"):
        self.token_to_id = dict(token_to_id)
        self.source = source
        ids = sorted(self.token_to_id.values())
        if ids != list(range(len(ids))):
            raise ValueError(f"{source}: ids must be 0..{len(ids) - 1} with no gaps or repeats")
        for special in (PAD, NULL):
            if special not in self.token_to_id:
                raise ValueError(f"{source}: special token {special!r} is missing")
        self.id_to_token = [""] * len(ids)
        for tok, i in self.token_to_id.items():
            self.id_to_token[i] = tok
        self.pad_id = self.token_to_id[PAD]
        self.null_id = self.token_to_id[NULL]
        # Column j of a (n, 138) ability multi-hot -> vocab id (-1: token not in vocab).
        self.ability_token_ids = np.array(
            [self.token_to_id.get(t, -1) for t in ABILITY_TOKENS], np.int32
        )

    def __len__(self) -> int:
        return len(self.id_to_token)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.token_to_id == other.token_to_id

    @classmethod
    def canonical(cls) -> Vocab:
        """Every ability token in tokenisation order, then ``<NULL>``, then ``<PAD>`` (last)."""
        toks = list(ABILITY_TOKENS) + [NULL, PAD]
        return cls({t: i for i, t in enumerate(toks)}, source="canonical vocab")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        return cls(read_json(path, what="token vocabulary"), source=str(path))

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.token_to_id)

    def encode(self, tokens: Iterable[str], *, where: str = "tokens") -> list[int]:
        out = []
        for t in tokens:
            if t not in self.token_to_id:
                raise BuildError(f"token {t!r} from {where} is not in {self.source}")
            out.append(self.token_to_id[t])
        return out

    def decode(self, ids: Iterable[int], *, skip_pad: bool = True) -> list[str]:
        return [self.id_to_token[int(i)] for i in ids if not (skip_pad and int(i) == self.pad_id)]

    def check_ids(self, ids: np.ndarray, *, where: str) -> None:
        """Refuse ids outside the vocabulary before they reach jit (JAX clamps silently)."""
        check_id_range(ids, len(self), what="token id", where=where)


class WeaponVocab:
    """``weapon_vocab.json``: ``"weapon_id_{N}"`` -> id, N the game's weapon id."""

    PREFIX = "weapon_id_"

    def __init__(self, key_to_id: Mapping[str, int], *, source: str = "weapon vocab"):
        self.key_to_id = dict(key_to_id)
        self.source = source
        ids = sorted(self.key_to_id.values())
        if ids != list(range(len(ids))):
            raise ValueError(f"{source}: ids must be 0..{len(ids) - 1} with no gaps or repeats")
        self.game_ids = np.zeros(len(ids), np.int32)
        for key, i in self.key_to_id.items():
            if not key.startswith(self.PREFIX) or not key[len(self.PREFIX) :].lstrip("-").isdigit():
                raise ValueError(f"{source}: weapon key {key!r} is not 'weapon_id_<N>'")
            self.game_ids[i] = int(key[len(self.PREFIX) :])
        self._by_game_id = {int(g): i for i, g in enumerate(self.game_ids)}

    def __len__(self) -> int:
        return len(self.game_ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WeaponVocab) and self.key_to_id == other.key_to_id

    @classmethod
    def from_game_ids(cls, game_ids: Iterable[int]) -> WeaponVocab:
        uniq = sorted({int(g) for g in game_ids})
        return cls({f"{cls.PREFIX}{g}": i for i, g in enumerate(uniq)}, source="weapon vocab")

    @classmethod
    def load(cls, path: str | os.PathLike) -> WeaponVocab:
        return cls(read_json(path, what="weapon vocabulary"), source=str(path))

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.key_to_id)

    def encode_game_ids(self, game_ids: np.ndarray, *, where: str = "weapons") -> np.ndarray:
        """Game weapon ids -> vocab ids; an unknown game id is an error naming it."""
        game_ids = np.asarray(game_ids)
        out = np.empty(game_ids.shape, np.int32)
        for g in np.unique(game_ids):
            if int(g) not in self._by_game_id:
                raise BuildError(f"weapon game id {int(g)} from {where} is not in {self.source}")
            out[game_ids == g] = self._by_game_id[int(g)]
        return out

    def check_ids(self, ids: np.ndarray, *, where: str) -> None:
        check_id_range(ids, len(self), what="weapon id", where=where)


def check_id_range(ids: np.ndarray, size: int, *, what: str, where: str) -> None:
    """Raise naming the first id outside ``[0, size)``."""
    ids = np.asarray(ids)
    if ids.size == 0:
        raise ValueError(f"empty batch of {what}s from {where}")
    bad = (ids < 0) | (ids >= size)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{what} {int(ids[pos])} at position {pos} of {where} is outside [0, {size})"
        )
