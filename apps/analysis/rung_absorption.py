"""Absorption and splitting on the gear model's own hierarchy: the AP rungs.

Every standard ability's rungs are nested concepts: a build with Swim Speed Up >= 12 also
has >= 6 and >= 3 (the vocabulary's AP-threshold tokens, :data:`primary.vocab.AP_THRESHOLDS`;
the conditions ``swim_speed_up>=12`` of :mod:`primary.conditions`). Each rung is one
concept of :func:`sae_jax.absorption.absorption`, the rungs of one ability one family, so
the run's summary also says how often an absorbing latent is the main latent of another
rung of the same ability. The project groups abilities into no wider families (main-only
abilities have no rungs), so the rung hierarchy is the only one measured.
"""

from __future__ import annotations

import numpy as np

from primary.conditions import CATALOGUE, condition_matrix
from sae_jax.absorption import absorption


def rung_conditions():
    """The ability-rung conditions, by ability and then rung ascending."""
    rungs = [c for c in CATALOGUE if c.kind == "ability"]
    return sorted(rungs, key=lambda c: (c.ability, c.threshold))


def rung_absorption(builds, pooled: np.ndarray, sparse, sae) -> dict:
    """The ``absorption.json`` document of the SAE ``sae`` on ``builds`` (their pooled
    vectors ``pooled (n, D)``, their activations ``sparse``)."""
    conditions = rung_conditions()
    labels = condition_matrix(builds, conditions)
    params = sae.params()
    return absorption(pooled, sparse, np.asarray(sae.atoms()), np.asarray(params["b_dec"]),
                      labels, [c.name for c in conditions], texts=[c.text for c in conditions],
                      families=[c.ability for c in conditions])
