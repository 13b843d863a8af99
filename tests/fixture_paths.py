"""Where the tests' fixtures live (inside the repository, so a fresh clone has them), and
the parity measure the fixture tests share."""

from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# A SplatNLP run directory in the original's on-disk format, made by
# fixtures/make_splatnlp_fixture.py.
SPLATNLP_FIXTURE = FIXTURES / "splatnlp_small"


def rel_err(ours, theirs) -> float:
    """Parity measure of the fixture tests: max |ours - original| / max |original|."""
    theirs = np.asarray(theirs, np.float64)
    return float(np.abs(np.asarray(ours, np.float64) - theirs).max() / np.abs(theirs).max())
