"""The apps built on the library: training runs and sweeps, analysis, the workbench.

The commands are this package's top-level modules (verbs): ``train`` (also
``python -m sae_jax.train``), ``sweep``, ``analyze``, ``serve`` and ``label``. Below
them, one folder per concern, each importing only the ones listed before it:
``runs`` (settings, primary, data splits, evaluation, curves), ``analysis`` (statistics,
explanations, report), ``training`` (the one engine of runs and sweeps; a run ends with
its analysis) and ``workbench`` (the server's state and pages).
"""
