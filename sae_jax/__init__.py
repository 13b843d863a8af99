"""The sparse autoencoder: a pure library, and the runs built on it.

Library (imports neither ``primary`` nor ``bridge``): ``model``, ``architectures`` (the
encoders), ``recipes`` (their training losses), ``losses``,
``schedules``, ``transforms``, ``precision``, ``buffer``, ``resample``, ``step``,
``config``, ``store``, ``activity``, ``analysis``, ``concepts``.

Orchestration (ties the primary model, the bridge and the library together):
``run_setup``, ``training`` and its command ``train``, ``evaluate``, ``analyze``,
``report``, ``plots``, ``launch``. ``tests/test_layers.py`` holds this split.
"""
