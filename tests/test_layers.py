"""The layers of the project: a lower layer never imports a higher one (any import, even
one inside a function). A new module must be placed in a layer here to pass."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runkit", "primary", "sae_jax", "bridge")

# sae_jax holds two layers: the pure SAE library, and the orchestration that ties the
# primary model, the bridge and the library into runs, reports and commands.
SAE_LIBRARY = {
    "sae_jax", "sae_jax.model", "sae_jax.losses", "sae_jax.schedules", "sae_jax.transforms",
    "sae_jax.buffer", "sae_jax.resample", "sae_jax.step", "sae_jax.precision",
    "sae_jax.config", "sae_jax.store", "sae_jax.activity",
    "sae_jax.architectures", "sae_jax.recipes", "sae_jax.kth_largest",  # SAE architectures
    "sae_jax.stack",  # the vmapped stack of SAE steps
    "sae_jax.chunk",  # many primary batches of the loop in one call
    "sae_jax.analysis", "sae_jax.concepts", "sae_jax.concept_pairs",
    "sae_jax.sparse_activations",  # feature statistics
    "sae_jax.explain",  # the rule search
    "sae_jax.labels",  # the human label store
}
SAE_ORCHESTRATION = {
    "sae_jax.training", "sae_jax.loop_schedule", "sae_jax.run_setup", "sae_jax.train",
    "sae_jax.engine", "sae_jax.run_finish",  # the one training loop; finishing a run dir
    "sae_jax.launch", "sae_jax.evaluate", "sae_jax.plots",
    "sae_jax.analyze", "sae_jax.explanations", "sae_jax.report", "sae_jax.steered_views",
    "sae_jax.label",  # the label command
    "sae_jax.sweep", "sae_jax.sweep_run", "sae_jax.sweep_report",  # sweeps
    "sae_jax.serve", "sae_jax.workbench_run", "sae_jax.workbench_list",
    "sae_jax.workbench_lab",  # the workbench server
}

# What each layer may import (besides third-party packages).
MAY_IMPORT = {
    "run plumbing": {"run plumbing"},
    "primary": {"run plumbing", "primary"},
    "sae library": {"run plumbing", "sae library"},
    "bridge": {"run plumbing", "primary", "sae library", "bridge"},
    "orchestration": {"run plumbing", "primary", "sae library", "bridge", "orchestration"},
}


def layer_of(module: str) -> str | None:
    top = module.split(".")[0]
    if top == "runkit":
        return "run plumbing"
    if top == "primary":
        return "primary"
    if top == "bridge":
        return "bridge"
    if top == "sae_jax":
        # The module, its parent (a name imported from it), and the sub-packages above
        # (a module of sae_jax.architectures takes that package's layer).
        prefixes = [module.rsplit(".", i)[0] for i in range(module.count(".") + 1)]
        for name in prefixes[:2] + [p for p in prefixes[2:] if "." in p]:
            if name in SAE_ORCHESTRATION:
                return "orchestration"
            if name in SAE_LIBRARY:
                return "sae library"
        raise AssertionError(f"{module} is in no layer: add it to SAE_LIBRARY or "
                             f"SAE_ORCHESTRATION in {__file__}")
    return None  # third-party or standard library


def modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield ".".join(parts), path


def imports_of(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:  # "from sae_jax import analysis" names a module
                yield node.lineno, f"{node.module}.{alias.name}"


def upward_imports():
    found = []
    for module, path in modules():
        here = layer_of(module)
        for line, target in imports_of(path):
            there = layer_of(target) if target.split(".")[0] in PACKAGES else None
            if there is not None and there not in MAY_IMPORT[here]:
                found.append(f"{path.relative_to(ROOT)}:{line}: {module} ({here}) imports "
                             f"{target} ({there})")
    return found


def test_no_layer_imports_a_higher_one():
    assert upward_imports() == []


def test_every_module_has_a_layer():
    for module, _ in modules():
        assert layer_of(module) in MAY_IMPORT, module


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    bad = ROOT / "sae_jax" / "model.py"
    original = bad.read_text()
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (
        original + "\nfrom bridge.harvest import pooled_vectors\n" if self == bad
        else Path.read_bytes(self).decode()))
    assert any("sae_jax.model (sae library) imports bridge.harvest" in f
               for f in upward_imports())
