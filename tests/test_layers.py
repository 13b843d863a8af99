"""The layers of the project, read from the folders: a lower layer never imports a higher
one (any import, even one inside a function), at package level and, inside ``apps``, at
folder level. A module's layer is the longest prefix of its name in :data:`LAYERS`, so a
new module is placed by where it lives, not by a list of names."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Module prefixes, lowest layer first; each layer may import itself and the layers above
# it in this list (never one below it in the list).
LAYERS = (
    ("runkit", "run plumbing: logs, JSON, checkpoints, locks, flags, run directories"),
    ("primary", "the gear-build model, its data and legal builds"),
    ("sae_jax", "the SAE library: architectures, losses, optimiser, buffer, steps, statistics"),
    ("bridge", "where the models meet each other and the outside world"),
    ("apps.runs", "what every run is made of: settings, primary, data, evaluation, curves"),
    ("apps.analysis", "the analysis of a run: statistics, explanations, report"),
    ("apps.training", "training runs and sweeps (one engine); a run ends with its analysis"),
    ("apps.workbench", "the workbench's state and pages"),
    ("apps", "the commands"),
)
# What may not import what, besides the order: the SAE library knows nothing of the gear
# model, and the gear model nothing of SAEs.
SIDEWAYS = {("sae_jax", "primary"), ("primary", "sae_jax")}
# Named exceptions: module -> why.
EXCEPTIONS = {
    "sae_jax.train": "python -m sae_jax.train, the entry point the user's design card "
                     "names: a shim that runs the apps' train command",
}
PACKAGES = ("runkit", "primary", "sae_jax", "bridge", "apps")
ORDER = [prefix for prefix, _ in LAYERS]


def layer_of(module: str) -> str | None:
    """The layer prefix of a project module (None for anything else)."""
    best = None
    for prefix in ORDER:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best):
                best = prefix
    return best


def may_import(here: str, there: str) -> bool:
    if (here, there) in SIDEWAYS:
        return False
    return ORDER.index(there) <= ORDER.index(here)


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
            for alias in node.names:  # "from apps import train" names a module
                yield node.lineno, f"{node.module}.{alias.name}"


def upward_imports():
    found = []
    for module, path in modules():
        if module in EXCEPTIONS:
            continue
        here = layer_of(module)
        for line, target in imports_of(path):
            there = layer_of(target)
            if there is not None and not may_import(here, there):
                found.append(f"{path.relative_to(ROOT)}:{line}: {module} ({here}) imports "
                             f"{target} ({there})")
    return found


def test_no_layer_imports_a_higher_one():
    assert upward_imports() == []


def test_every_module_has_a_layer():
    for module, _ in modules():
        assert layer_of(module) in ORDER, module


def test_the_exceptions_are_shims():
    """An exception stays a few lines that hand over to the apps."""
    for module in EXCEPTIONS:
        path = ROOT / (module.replace(".", "/") + ".py")
        code = [line for line in path.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
        assert len(code) <= 12, f"{path} is no longer a shim ({len(code)} lines)"


def _with_line(monkeypatch, file: Path, line: str):
    original = file.read_text()
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (
        original + f"\n{line}\n" if self == file else Path.read_bytes(self).decode()))


def test_the_check_catches_an_upward_import(monkeypatch):
    _with_line(monkeypatch, ROOT / "sae_jax" / "model.py", "from bridge.harvest import x")
    assert any("sae_jax.model (sae_jax) imports bridge.harvest" in f for f in upward_imports())


def test_the_check_catches_an_upward_import_between_app_folders(monkeypatch):
    _with_line(monkeypatch, ROOT / "apps" / "runs" / "evaluation.py",
               "from apps.analysis import report")
    assert any("apps.runs.evaluation (apps.runs) imports apps.analysis" in f
               for f in upward_imports())


def test_the_check_catches_the_library_importing_the_gear_model(monkeypatch):
    _with_line(monkeypatch, ROOT / "sae_jax" / "buffer.py", "import primary.vocab")
    assert any("imports primary.vocab (primary)" in f for f in upward_imports())
