"""Architecture names -> their plugins (one module per architecture).

A plugin module is imported on its first lookup: the plugins build on
:mod:`sae_jax.model` and :mod:`sae_jax.losses`, which themselves ask this registry, so
the package's own import stays free of them.
"""

from __future__ import annotations

import importlib

from sae_jax.architectures.base import Architecture

# name -> module holding ``ARCHITECTURE``, that architecture's plugin.
_MODULES = {
    "relu_l1": "sae_jax.architectures.relu_l1",
    "topk": "sae_jax.architectures.topk",
    "batchtopk": "sae_jax.architectures.batchtopk",
    "jumprelu": "sae_jax.architectures.jumprelu",
    "matryoshka": "sae_jax.architectures.matryoshka",
}
ARCHITECTURES = tuple(_MODULES)
_LOADED: dict[str, Architecture] = {}


def get_architecture(name: str, *, where: str = "--architecture") -> Architecture:
    """The plugin of architecture ``name``; ValueError naming the bad value, ``where`` it
    came from, and the choices."""
    plugin = _LOADED.get(name) if isinstance(name, str) else None
    if plugin is None:
        if name not in _MODULES:
            raise ValueError(f"unknown SAE architecture {name!r} ({where}); choose one of "
                             f"{ARCHITECTURES}")
        plugin = importlib.import_module(_MODULES[name]).ARCHITECTURE
        if not isinstance(plugin, Architecture) or plugin.name != name:
            raise TypeError(f"{_MODULES[name]}.ARCHITECTURE is not the {name!r} plugin")
        _LOADED[name] = plugin
    return plugin


def check_architecture(name: str, *, where: str = "--architecture") -> None:
    get_architecture(name, where=where)
