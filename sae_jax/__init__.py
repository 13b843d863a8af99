"""The sparse-autoencoder library: it imports neither the gear model (``primary``), the
``bridge`` nor the ``apps`` (tests/test_layers.py).

``model`` (the SAE and its pure encode/decode), ``architectures`` (one plugin per
architecture behind one protocol, and their registry), ``recipes`` (the step's view of
them), ``losses``, ``schedules``, ``transforms`` (the optax chain), ``precision``,
``buffer`` (the device-resident activation buffer), ``resample``, ``step`` and ``stack``
(many SAEs as one vmapped step), ``config``, ``sae_dir`` (saved SAEs), ``activity``,
``sparse_activations``, ``feature_stats``, ``concept_recovery``, ``pair_recovery``,
``rule_search`` and ``feature_labels`` (the label file format).

``train`` is the one exception to the layer rule: ``python -m sae_jax.train`` runs
:mod:`apps.train`.
"""
