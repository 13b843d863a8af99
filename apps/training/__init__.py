"""Training runs and sweeps: one engine (the harvest/train loop, its chunks and their plan),
the single run, the sweep of stacked members, and what finishes a trained SAE."""
