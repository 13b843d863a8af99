"""Where the tests' fixtures live (inside the repository, so a fresh clone has them)."""

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# A SplatNLP run directory in the original's on-disk format, made by
# fixtures/make_splatnlp_fixture.py.
SPLATNLP_FIXTURE = FIXTURES / "splatnlp_small"
