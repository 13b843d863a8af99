"""Run plumbing shared by every training command: the lowest layer of the project.

Nothing here imports ``primary``, ``sae_jax`` or ``bridge``. Modules:

- ``jsonio``: atomic JSON writes and reads that name the file on error.
- ``metrics_log``: the append-only ``metrics.jsonl`` that survives a torn last line.
- ``checkpoints``: one orbax wrapper with integrity manifests and fallback to the
  newest intact checkpoint.
- ``lock``: one process per workdir.
- ``resume``: what a rerun on an existing workdir may change.
- ``run_dir``: the run directory as one value: its paths, ``run.json`` and the other
  records, paths recorded relative to the run.
- ``hosts``: joining a multi-process run, and which process writes files.
- ``sharding``: the data-parallel mesh and the batch each process feeds it.
- ``prefetch``: items made in a worker thread one step ahead of their use.
- ``flags``: absl flags from config dataclasses, and flagfiles read into them.
- ``errors``, ``cli``: the one-line ``error:`` for user mistakes and stopped runs.
"""
