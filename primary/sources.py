"""One entry point for gear-build data, whatever its source, and default vocabularies.

Sources: ``synthetic`` (the built-in world, :mod:`primary.synthetic`),
``statink`` (a stat.ink battle CSV), ``splatnlp_tsv`` (SplatNLP's tokenized
TSV, read with that run's vocabularies).
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from primary.builds import BuildSet
from primary.splatnlp_tsv import read_splatnlp_tsv
from primary.statink import read_statink_csv
from primary.synthetic import SYNTHETIC_WEAPON_IDS, generate_builds
from primary.vocab import Vocab, WeaponVocab
from primary.weapons import WEAPON_GAME_IDS

SOURCES: tuple[str, ...] = ("synthetic", "statink", "splatnlp_tsv")


def _cap(builds: BuildSet, num_builds: int, seed: int) -> BuildSet:
    """At most ``num_builds`` builds (a seeded random subset, in file order); <= 0 keeps all."""
    if num_builds <= 0 or len(builds) <= num_builds:
        return builds
    keep = np.sort(np.random.default_rng([int(seed), 0xCA9]).choice(
        len(builds), num_builds, replace=False))
    return builds.subset(keep)


def load_builds(source: str, *, path: str = "", num_builds: int = 200_000, seed: int = 0,
                vocab: Vocab | str | None = None,
                weapon_vocab: WeaponVocab | str | None = None, concepts=None) -> BuildSet:
    """Builds from ``source``.

    num_builds: for ``synthetic`` how many to generate; for file sources at
    most this many (a seeded random subset), ``<= 0`` for all.
    vocab, weapon_vocab: the model's vocabularies (objects or paths to the json files);
    needed for ``splatnlp_tsv``; for ``synthetic`` the weapon vocabulary limits the world to
    weapons the model knows (an imported model may know fewer than the weapon table).
    concepts: ``synthetic`` only: the concept set to plant (None: the built-in set; a concept
    set file path; or a sequence of :class:`primary.planted_concepts.Concept`).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; valid sources: {', '.join(SOURCES)}")
    if source == "synthetic":
        if num_builds <= 0:
            raise ValueError(f"synthetic data needs num_builds > 0, got {num_builds}")
        return generate_builds(num_builds, seed, weapons=_known_table_weapons(weapon_vocab),
                               concepts=concepts)
    if concepts is not None:
        raise ValueError(f"a concept set plants concepts in synthetic builds only; data source "
                         f"{source!r} has its own builds")
    if not path:
        raise ValueError(f"data source {source!r} needs a path")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{source} data file {path} does not exist")
    if source == "statink":
        builds, summary = read_statink_csv(path)
        logging.info("%s", summary)
    else:
        if vocab is None or weapon_vocab is None:
            raise ValueError("data source 'splatnlp_tsv' needs vocab and weapon_vocab "
                             "(the run's vocab.json and weapon_vocab.json)")
        if not isinstance(vocab, Vocab):
            vocab = Vocab.load(vocab)
        if not isinstance(weapon_vocab, WeaponVocab):
            weapon_vocab = WeaponVocab.load(weapon_vocab)
        builds = read_splatnlp_tsv(path, vocab, weapon_vocab)
    return _cap(builds, num_builds, seed)


def _known_table_weapons(weapon_vocab: WeaponVocab | str | None) -> list[int] | None:
    """The synthetic world's weapons that ``weapon_vocab`` knows (None: all of them)."""
    if weapon_vocab is None:
        return None
    if not isinstance(weapon_vocab, WeaponVocab):
        weapon_vocab = WeaponVocab.load(weapon_vocab)
    known = sorted(set(SYNTHETIC_WEAPON_IDS) & {int(g) for g in weapon_vocab.game_ids})
    if not known:
        raise ValueError(f"{weapon_vocab.source} holds none of the synthetic world's weapons "
                         f"(game ids {sorted(SYNTHETIC_WEAPON_IDS)[:8]} ...)")
    return known


def default_vocabs(builds: BuildSet | None = None, *, data_source: str = "synthetic"
                   ) -> tuple[Vocab, WeaponVocab]:
    """The canonical token vocabulary, and a weapon vocabulary over the weapons the data
    source can hold, plus any other weapon in ``builds``.

    For ``synthetic`` data: the synthetic world's weapons (the vocabulary every synthetic
    model has had; a larger one would change the models' initialisation). For real data:
    every kit of :data:`primary.weapons.WEAPONS`, so a model knows each current weapon.
    Ids follow game ids in both (``weapon_id_{N}`` keys name the game id, so a saved
    vocabulary keeps its meaning whatever the table holds)."""
    if data_source not in SOURCES:
        raise ValueError(f"unknown data source {data_source!r}; valid sources: "
                         f"{', '.join(SOURCES)}")
    game_ids = set(SYNTHETIC_WEAPON_IDS if data_source == "synthetic" else WEAPON_GAME_IDS)
    if builds is not None:
        game_ids |= {int(g) for g in np.unique(builds.weapons)}
    return Vocab.canonical(), WeaponVocab.from_game_ids(game_ids)
