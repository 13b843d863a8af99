"""The sparse autoencoder: a pure library, and the runs built on it.

Library (imports neither ``primary`` nor ``bridge``): ``model``, ``architectures`` (one
plugin per architecture: encoder, loss terms, settings, export), ``recipes`` (the step's
view of them), ``losses``, ``schedules``, ``transforms``,
``precision``, ``buffer``, ``resample``, ``step`` and ``stack`` (many SAEs as one vmapped
step), ``config``, ``store``, ``activity``, ``sparse_activations`` (positive activations by
feature), ``analysis``, ``concepts``, ``explain`` (the rule search), ``labels`` (the human
label store).

Orchestration (ties the primary model, the bridge and the library together):
``engine`` (the one training loop of runs and sweeps), ``run_setup``, ``run_finish``,
``training`` and its command ``train``, ``sweep`` (``sweep_run``,
``sweep_report``), ``evaluate``, ``analyze``, ``explanations``, ``steered_views``,
``report``, ``plots``, ``label``, ``launch``, ``serve`` (``workbench_run``,
``workbench_list``, ``workbench_lab``). ``tests/test_layers.py`` holds this split.
"""
