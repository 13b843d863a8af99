"""The planted concepts (build archetypes) of the synthetic build world.

Every synthetic build is made from a weapon, one to three of these concepts,
and filler. A concept that labels a build is really in it: each ``required``
ability holds at least its AP (main-only abilities: their 10-AP main slot).
``favoured`` abilities make the concept's filler lean their way, and
``weapon_classes`` makes the concept likelier on those classes (classes not
named get :data:`OTHER_CLASS_AFFINITY`).

Concepts share abilities on purpose (superposition): no single ability
identifies a concept, only combinations do.

==================  ===============================================  ====================
name                required (min AP)                                likeliest classes
==================  ===============================================  ====================
stealth_slayer      ninja_squid, swim_speed_up 16                     shooter dualie splatana
special_spammer     special_charge_up 16, special_power_up 6          slosher brella shooter
zombie              comeback, quick_respawn 19                        shooter dualie brush
anchor              ink_saver_main 13, quick_super_jump 6             charger splatling stringer
bomb_thrower        sub_power_up 13, ink_saver_sub 10                 shooter slosher blaster
mobile_painter      run_speed_up 16, intensify_action 6               splatling shooter dualie
opening_rusher      opening_gambit, swim_speed_up 9,                  shooter dualie splatana
                    quick_super_jump 3
tenacious_support   tenacity, special_charge_up 9                     brella stringer charger
punisher_backline   respawn_punisher, ink_saver_main 6,               charger splatling
                    sub_resistance_up 3
super_jumper        drop_roller, quick_super_jump 13                  shooter dualie roller
objective_crusher   object_shredder, ink_recovery_up 6                roller blaster splatana
sensor_tracker      haunt, sub_power_up 6                             charger splatling
thermal_marksman    thermal_ink, run_speed_up 6                       charger splatling
last_stand          last_ditch_effort, ink_recovery_up 9              (every class)
ink_economist       ink_saver_main 10, ink_recovery_up 13             slosher splatling blaster
hardy               sub_resistance_up 9, ink_resistance_up 9          (every class)
special_keeper      special_saver 10, quick_respawn 6                 shooter slosher brella
jump_shot_duelist   intensify_action 13, swim_speed_up 6              dualie blaster splatana
flanker             stealth_jump, quick_super_jump 9, swim_speed_up 3 dualie shooter brush
==================  ===============================================  ====================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from primary.vocab import ABILITIES, ABILITY_INDEX, MAIN_AP, PIECE_OF_MAIN_ONLY
from primary.weapons import WEAPON_CLASSES

OTHER_CLASS_AFFINITY = 0.4


@dataclass(frozen=True)
class Concept:
    """A build archetype.

    required: ability -> minimum AP a labelled build holds (main-only: 10).
    favoured: ability -> extra filler weight while the concept is present.
    weapon_classes: weapon class -> affinity (how likely the concept is drawn).
    """

    name: str
    description: str
    required: Mapping[str, int]
    favoured: Mapping[str, float] = field(default_factory=dict)
    weapon_classes: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        where = f"concept {self.name!r}"
        if not self.required:
            raise ValueError(f"{where} requires no ability")
        pieces = []
        for a, ap in self.required.items():
            if a not in ABILITY_INDEX:
                raise ValueError(f"{where}: unknown required ability {a!r}")
            if a in PIECE_OF_MAIN_ONLY:
                if ap != MAIN_AP:
                    raise ValueError(f"{where}: main-only {a!r} must require {MAIN_AP} AP")
                pieces.append(PIECE_OF_MAIN_ONLY[a])
            elif not 0 < ap <= 29:
                raise ValueError(f"{where}: required AP of {a!r} must be in 1..29, got {ap}")
        if len(pieces) != len(set(pieces)):
            raise ValueError(f"{where}: two main-only abilities need the same gear piece")
        for a in self.favoured:
            if a not in ABILITY_INDEX:
                raise ValueError(f"{where}: unknown favoured ability {a!r}")
        for c in self.weapon_classes:
            if c not in WEAPON_CLASSES:
                raise ValueError(f"{where}: unknown weapon class {c!r}")


CONCEPTS: tuple[Concept, ...] = (
    Concept(
        "stealth_slayer", "Ninja Squid with heavy Swim Speed: closes in unseen.",
        {"ninja_squid": 10, "swim_speed_up": 16},
        {"quick_super_jump": 2.0, "ink_resistance_up": 1.5, "stealth_jump": 1.0},
        {"shooter": 3, "dualie": 3, "splatana": 3, "brush": 2.5, "roller": 2},
    ),
    Concept(
        "special_spammer", "Special Charge Up with some Special Power Up: special every fight.",
        {"special_charge_up": 16, "special_power_up": 6},
        {"special_saver": 2.0, "ink_recovery_up": 1.0},
        {"slosher": 3, "brella": 3, "shooter": 2, "splatling": 2, "blaster": 2, "stringer": 2},
    ),
    Concept(
        "zombie", "Comeback and heavy Quick Respawn: trades lives for pressure.",
        {"comeback": 10, "quick_respawn": 19},
        {"special_saver": 2.0, "quick_super_jump": 1.5, "swim_speed_up": 1.0},
        {"shooter": 3, "dualie": 3, "brush": 3, "roller": 2, "splatana": 2},
    ),
    Concept(
        "anchor", "Ink Saver (Main) with Quick Super Jump: holds the back line.",
        {"ink_saver_main": 13, "quick_super_jump": 6},
        {"run_speed_up": 1.5, "special_charge_up": 1.0, "sub_resistance_up": 1.0},
        {"charger": 4, "splatling": 3, "stringer": 3, "blaster": 1},
    ),
    Concept(
        "bomb_thrower", "Sub Power Up and Ink Saver (Sub): throws bombs all game.",
        {"sub_power_up": 13, "ink_saver_sub": 10},
        {"ink_recovery_up": 2.0, "sub_resistance_up": 1.0},
        {"shooter": 3, "slosher": 3, "blaster": 2, "dualie": 1.5},
    ),
    Concept(
        "mobile_painter", "Run Speed Up with Intensify Action: paints on the move.",
        {"run_speed_up": 16, "intensify_action": 6},
        {"ink_resistance_up": 2.0, "ink_saver_main": 1.0},
        {"splatling": 4, "shooter": 2, "dualie": 2},
    ),
    Concept(
        "opening_rusher", "Opening Gambit with Swim Speed: wins the first push.",
        {"opening_gambit": 10, "swim_speed_up": 9, "quick_super_jump": 3},
        {"run_speed_up": 1.0, "ink_resistance_up": 1.0},
        {"shooter": 3, "dualie": 2, "splatana": 2, "brush": 2, "blaster": 1.5},
    ),
    Concept(
        "tenacious_support", "Tenacity with Special Charge Up: specials from behind.",
        {"tenacity": 10, "special_charge_up": 9},
        {"special_power_up": 2.0, "quick_super_jump": 1.0},
        {"brella": 4, "stringer": 3, "charger": 2, "blaster": 2, "slosher": 1.5},
    ),
    Concept(
        "punisher_backline", "Respawn Punisher on a careful long-range player.",
        {"respawn_punisher": 10, "ink_saver_main": 6, "sub_resistance_up": 3},
        {"quick_super_jump": 1.0, "run_speed_up": 1.0},
        {"charger": 4, "splatling": 2.5, "stringer": 2},
    ),
    Concept(
        "super_jumper", "Drop Roller with Quick Super Jump: always back in the fight.",
        {"drop_roller": 10, "quick_super_jump": 13},
        {"sub_resistance_up": 1.0, "special_charge_up": 1.0},
        {"shooter": 2, "dualie": 2, "roller": 2, "brella": 1.5},
    ),
    Concept(
        "objective_crusher", "Object Shredder with Ink Recovery: breaks shields and objects.",
        {"object_shredder": 10, "ink_recovery_up": 6},
        {"intensify_action": 1.0, "special_power_up": 1.0},
        {"roller": 3, "blaster": 3, "splatana": 3, "brush": 2},
    ),
    Concept(
        "sensor_tracker", "Haunt with Sub Power Up: marks opponents.",
        {"haunt": 10, "sub_power_up": 6},
        {"ink_saver_sub": 1.5},
        {"charger": 3, "splatling": 2, "shooter": 1.5},
    ),
    Concept(
        "thermal_marksman", "Thermal Ink with Run Speed Up: tracks what it hits.",
        {"thermal_ink": 10, "run_speed_up": 6},
        {"ink_saver_main": 1.0, "intensify_action": 1.0},
        {"charger": 3, "splatling": 3, "stringer": 2},
    ),
    Concept(
        "last_stand", "Last-Ditch Effort with Ink Recovery Up: strong late in the game.",
        {"last_ditch_effort": 10, "ink_recovery_up": 9},
        {"ink_saver_main": 1.5, "special_saver": 1.0},
        {c: 1.0 for c in WEAPON_CLASSES},
    ),
    Concept(
        "ink_economist", "Ink Saver (Main) and Ink Recovery Up: never runs dry.",
        {"ink_saver_main": 10, "ink_recovery_up": 13},
        {"ink_saver_sub": 1.0},
        {"slosher": 3, "splatling": 2, "blaster": 2, "dualie": 2, "roller": 2},
    ),
    Concept(
        "hardy", "Sub Resistance Up and Ink Resistance Up: shrugs off chip damage.",
        {"sub_resistance_up": 9, "ink_resistance_up": 9},
        {"special_saver": 1.0},
        {c: 1.0 for c in WEAPON_CLASSES},
    ),
    Concept(
        "special_keeper", "Special Saver with Quick Respawn: keeps the special after a splat.",
        {"special_saver": 10, "quick_respawn": 6},
        {"special_charge_up": 1.0},
        {"shooter": 2, "slosher": 2, "brella": 2},
    ),
    Concept(
        "jump_shot_duelist", "Intensify Action with Swim Speed: accurate on the jump.",
        {"intensify_action": 13, "swim_speed_up": 6},
        {"run_speed_up": 1.0, "quick_respawn": 1.0},
        {"dualie": 4, "blaster": 3, "splatana": 2, "brush": 1.5},
    ),
    Concept(
        "flanker", "Stealth Jump with Quick Super Jump: lands behind the opponents.",
        {"stealth_jump": 10, "quick_super_jump": 9, "swim_speed_up": 3},
        {"ink_resistance_up": 1.0},
        {"dualie": 3, "shooter": 2, "splatana": 2, "brush": 2, "roller": 1.5},
    ),
)

CONCEPT_NAMES: tuple[str, ...] = tuple(c.name for c in CONCEPTS)
if len(set(CONCEPT_NAMES)) != len(CONCEPT_NAMES):
    raise ValueError("concept names must be unique")


def required_ap_table(concepts=CONCEPTS) -> np.ndarray:
    """``(C, 26)`` int16: the AP each concept requires, columns :data:`ABILITIES`."""
    table = np.zeros((len(concepts), len(ABILITIES)), np.int16)
    for i, c in enumerate(concepts):
        for a, ap in c.required.items():
            table[i, ABILITY_INDEX[a]] = ap
    return table


def favoured_table(concepts=CONCEPTS) -> np.ndarray:
    """``(C, 26)`` float64 filler weights each concept adds."""
    table = np.zeros((len(concepts), len(ABILITIES)))
    for i, c in enumerate(concepts):
        for a, w in c.favoured.items():
            table[i, ABILITY_INDEX[a]] = w
    return table


def class_affinity_table(concepts=CONCEPTS) -> np.ndarray:
    """``(n_classes, C)`` float64: how likely each concept is on each weapon class."""
    table = np.full((len(WEAPON_CLASSES), len(concepts)), OTHER_CLASS_AFFINITY)
    for j, c in enumerate(concepts):
        for cls, aff in c.weapon_classes.items():
            table[WEAPON_CLASSES.index(cls), j] = aff
    return table


def concept_holds(ap: np.ndarray, concepts=CONCEPTS) -> np.ndarray:
    """``(n, 26)`` AP -> ``(n, C)`` bool: does each build meet each concept's requirement?"""
    req = required_ap_table(concepts).astype(np.int32)
    ap = np.asarray(ap).astype(np.int32)
    return ((ap[:, None, :] >= req[None, :, :]) | (req[None, :, :] == 0)).all(-1)
