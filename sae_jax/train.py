"""``python -m sae_jax.train``: the SAE training command, :mod:`apps.train`, under the name
its users know. The one module of the library that imports an app (tests/test_layers.py)."""

from apps.train import main
from runkit.cli import run_with_flagfiles

if __name__ == "__main__":
    run_with_flagfiles(main)
