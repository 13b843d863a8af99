"""Architectures are plugins: the registry holds the five, each implements the whole
protocol, and no code outside ``sae_jax/architectures/`` switches on an architecture's
name (it asks the plugin instead)."""

import ast
import inspect
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from sae_jax.architectures import ARCHITECTURES, Architecture, get_architecture
from sae_jax.architectures.base import PARAM_KINDS

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("runkit", "primary", "sae_jax", "bridge", "benchmarks")
PLUGIN_PACKAGE = ROOT / "sae_jax" / "architectures"
FIVE = ("relu_l1", "topk", "batchtopk", "jumprelu", "matryoshka")
_COMPARISONS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)


def _names_in(node) -> set[str]:
    """Architecture names among the string constants of a literal (a string, or a
    tuple/list/set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value} & set(FIVE)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_names_in(e) for e in node.elts))
    return set()


def name_switches(source: str) -> list[tuple[int, str]]:
    """``(line, what)`` for every place that switches on an architecture's name: a
    comparison or membership test with a name literal, or with a module-level constant
    holding names (``X in TOPK_FAMILY``); a ``match`` case on a name; a dict keyed by names
    (a dispatch table)."""
    tree = ast.parse(source)
    constants = {}  # module-level NAME = (..."topk"...)
    for node in tree.body:
        if isinstance(node, ast.Assign) and _names_in(node.value):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = _names_in(node.value)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, _COMPARISONS)
                                                 for op in node.ops):
            for side in (node.left, *node.comparators):
                names = _names_in(side)
                if isinstance(side, ast.Name) and side.id in constants:
                    names = constants[side.id]
                if names:
                    found.append((node.lineno, f"comparison with {sorted(names)}"))
        elif isinstance(node, ast.MatchValue) and _names_in(node.value):
            found.append((node.lineno, f"match case {sorted(_names_in(node.value))}"))
        elif isinstance(node, ast.Dict):
            keys = set().union(*(_names_in(k) for k in node.keys if k is not None))
            if keys:
                found.append((node.lineno, f"dict keyed by {sorted(keys)}"))
    return found


def test_the_scan_catches_a_switch_on_a_name():
    cases = {
        'if cfg.architecture == "topk":\n    pass\n': 1,
        'if arch in ("topk", "batchtopk"):\n    pass\n': 1,
        'ok = "jumprelu" != config.architecture\n': 1,
        'FAMILY = ("batchtopk", "matryoshka")\nif a in FAMILY:\n    pass\n': 1,
        'match arch:\n    case "relu_l1":\n        pass\n': 1,
        'TABLE = {"relu_l1": "standard"}\n': 1,
        # Not switches: a field default, a name in a message, asking the registry.
        'architecture: str = "relu_l1"\n': 0,
        'msg = f"--architecture=matryoshka, got {x}"\n': 0,
        'if name in ARCHITECTURES:\n    pass\n': 0,
        'if a.architecture != b.architecture:\n    pass\n': 0,
    }
    for source, count in cases.items():
        assert len(name_switches(source)) == count, source


def test_no_code_outside_the_plugins_switches_on_an_architecture_name():
    files = [p for package in SCANNED for p in sorted((ROOT / package).rglob("*.py"))
             if PLUGIN_PACKAGE not in p.parents]
    assert len(files) > 50  # the scan reads the sources
    offenders = [f"{path.relative_to(ROOT)}:{line}: {what}"
                 for path in files for line, what in name_switches(path.read_text())]
    assert not offenders, ("ask the architecture's plugin (sae_jax.architectures) instead:\n"
                           + "\n".join(offenders))


# ---------------------------------------------------------------- the registry

def _abstract_methods() -> set[str]:
    return set(Architecture.__abstractmethods__)


def missing_from_protocol(cls) -> list[str]:
    """Protocol members that ``cls`` leaves unimplemented or unset."""
    missing = sorted(m for m in _abstract_methods()
                     if getattr(getattr(cls, m), "__isabstractmethod__", False))
    missing += [a for a in ("name", "saelens_architecture") if not getattr(cls, a)]
    return missing


def test_the_registry_holds_exactly_the_five():
    assert sorted(ARCHITECTURES) == sorted(FIVE)
    for name in FIVE:
        plugin = get_architecture(name)
        assert isinstance(plugin, Architecture) and plugin.name == name
        assert type(plugin).__module__ == f"sae_jax.architectures.{name}"
    with pytest.raises(ValueError, match=r"unknown SAE architecture 'sparse' \(--architecture\)"
                                         r"; choose one of \('relu_l1', 'topk'"):
        get_architecture("sparse")


@pytest.mark.parametrize("name", FIVE)
def test_each_plugin_implements_the_whole_protocol(name):
    plugin = get_architecture(name)
    assert len(_abstract_methods()) >= 15
    assert not inspect.isabstract(type(plugin))
    assert missing_from_protocol(type(plugin)) == []
    for param, kind in plugin.extra_params:
        assert isinstance(param, str) and kind in PARAM_KINDS
    assert isinstance(plugin.uses_auxk, bool) and isinstance(plugin.masked_weight_decay, bool)
    # Hashable and static: a jitted function can take it as a static argument.
    assert hash(plugin) == hash(get_architecture(name)) and plugin == get_architecture(name)
    f = jax.jit(lambda x, arch: x + len(arch.name), static_argnums=1)
    assert int(f(jnp.zeros((), jnp.int32), plugin)) == len(name)
    with pytest.raises(AttributeError):
        plugin.name = "other"  # frozen


def test_the_protocol_check_sees_a_missing_method():
    base = type(get_architecture("topk"))
    incomplete = type("Incomplete", (Architecture,), {
        "name": "x", "saelens_architecture": "x",
        **{m: getattr(base, m) for m in _abstract_methods() - {"export_fields"}}})
    assert missing_from_protocol(incomplete) == ["export_fields"]
    assert missing_from_protocol(type("Nameless", (base,), {"name": ""})) == ["name"]


def test_every_architecture_has_its_own_display_name():
    shown = [get_architecture(name).display_name for name in ARCHITECTURES]
    assert all(shown) and len(set(shown)) == len(shown)
