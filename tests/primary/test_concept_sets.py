"""Concept sets: the default world unchanged, custom sets planted honestly, loader errors."""

import hashlib

import numpy as np
import pytest

from primary.synthetic import generate_builds


def _digest(builds) -> str:
    h = hashlib.sha256()
    for a in (builds.weapons, builds.ap, builds.concepts):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("|".join(builds.concept_names).encode())
    return h.hexdigest()


# Digests of the built-in world's output recorded before the world took a concept set
# (70 000 builds cross the 65 536-build chunk boundary).
DEFAULT_DIGESTS = [
    (3000, 0, None, "3d34c995bbc4d726c2bb84edc845b9150d6966ce496337e754f607dfc345cb00"),
    (70_000, 7, None, "efb6e263253d390153910128c499535d1dcc14734f856e9ac6b4dc40e5692b99"),
    (500, 3, (40, 1000, 2010), "8e6c124ada58ae2c26c1ce3fdf0ad03e896a5f6ad85ea62f0fa05a3591e8d12b"),
]


@pytest.mark.parametrize("n,seed,weapons,expected", DEFAULT_DIGESTS)
def test_default_world_is_bit_identical_to_before(n, seed, weapons, expected):
    assert _digest(generate_builds(n, seed, weapons=weapons)) == expected
