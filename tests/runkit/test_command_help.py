"""``python -m <command> --help`` of every command: exit 0, every flag of the command with
a help sentence and its default; absl's own flags only under ``--helpfull``.

A command's own flags are read from ``--helpfull``, which lists every defined flag under
the module that defined it: those of this project's modules (wherever they were defined,
so a flag --help misses still counts) against absl's and other libraries'.
"""

import dataclasses
import os
import re
import subprocess
import sys
from multiprocessing.pool import ThreadPool
from pathlib import Path

import pytest

from primary.training import PrimaryTrainConfig
from sae_jax.config import SAETrainConfig

# Slow (--help and --helpfull of every command, each a process importing JAX):
# run by `pytest -m slow`; .ci/run runs both passes.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("runkit", "primary", "sae_jax", "bridge", "apps")
ARGPARSE = {"runkit.launch"}  # parses its own arguments: no absl flags, no --helpfull
# Commands that expose a config as flags: each field declared with a help is a flag.
CONFIGS = {"sae_jax.train": SAETrainConfig, "apps.train": SAETrainConfig,
           "apps.sweep": SAETrainConfig,
           "primary.train": PrimaryTrainConfig}


def _commands() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if re.search(r'^if __name__ == "__main__":', path.read_text(), re.M):
                found.append(".".join(path.relative_to(REPO).with_suffix("").parts))
    return found


COMMANDS = _commands()


def _run(args: tuple[str, ...]) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO), "COLUMNS": "80"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def outputs() -> dict:
    """``{(command, option): CompletedProcess}``, the commands started a few at a time
    (each takes seconds, mostly importing)."""
    jobs = [(c, o) for c in COMMANDS for o in ("--help", "--helpfull") if
            c not in ARGPARSE or o == "--help"]
    with ThreadPool(4) as pool:
        done = pool.map(lambda job: _run(("-m", job[0], job[1])), jobs)
    return dict(zip(jobs, done))


_ENTRY = re.compile(r"^  (?:-\S+,)?--(?:\[no\])?(\w+):(.*)$")
_TYPE_NOTE = re.compile(r"^\((default: .*|an? [\w ]+|a comma separated list|"
                        r"an integer in the range .*)\)$")


def absl_entries(text: str) -> dict[str, dict[str, dict]]:
    """``{module: {flag: {"help": sentence, "notes": [...]}}}`` from absl's help output."""
    modules, module, entry = {}, None, None
    for line in text.splitlines()[text.splitlines().index("flags:") + 1:]:
        if line and not line.startswith(" ") and line.endswith(":"):
            module, entry = line[:-1], None
            modules[module] = {}
        elif (m := _ENTRY.match(line)) and module is not None:
            entry = modules[module][m.group(1)] = {"help": m.group(2).strip(), "notes": []}
        elif line.startswith("    ") and entry is not None:
            part = line.strip()
            if _TYPE_NOTE.match(part):
                entry["notes"].append(part)
            else:
                entry["help"] += " " + part
    return modules


def own_module(module: str) -> bool:
    """A module of this project, as absl names it (a path for ``__main__``)."""
    if module.startswith(("/", ".")) or module.endswith(".py"):
        parts = Path(module).resolve().relative_to(REPO).parts
        return parts[0] in PACKAGES
    return module.split(".")[0] in PACKAGES


def check_help_sentence(command: str, name: str, text: str, *, has_default: bool) -> None:
    text = re.sub(r"^<[^>]*>:\s*", "", text)  # an enum flag's choices
    assert not re.fullmatch(r"[A-Z]\w*\.\w+", text), f"{command} --{name}: placeholder {text!r}"
    assert len(text.split()) >= 3, f"{command} --{name}: no help sentence ({text!r})"
    # absl prints no default when it is None: the sentence must say what omitting it means.
    assert has_default or re.search(r"default|required", text, re.I), (
        f"{command} --{name}: neither a default nor what leaving it out means ({text!r})")


def test_every_command_is_checked():
    assert {"sae_jax.train", "apps.train", "apps.sweep", "apps.analyze", "apps.serve",
            "apps.label", "primary.train", "bridge.export_saelens",
            "runkit.launch"} <= set(COMMANDS)


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - ARGPARSE))
def test_help_lists_every_flag_of_the_command_with_its_help_and_default(command, outputs):
    short, full = outputs[command, "--help"], outputs[command, "--helpfull"]
    assert short.returncode == 0, short.stderr[-2000:]
    assert full.returncode == 0, full.stderr[-2000:]
    every = absl_entries(full.stdout)
    own = {name: e for module, entries in every.items() if own_module(module)
           for name, e in entries.items()}
    shown = {name: e for entries in absl_entries(short.stdout).values()
             for name, e in entries.items()}
    assert own, f"{command} --helpfull lists no flag of its own"
    if command in CONFIGS:
        fields = {f.name for f in dataclasses.fields(CONFIGS[command]) if "help" in f.metadata}
        assert fields <= set(own), sorted(fields - set(own))
    assert set(shown) == set(own), (
        f"{command} --help: missing {sorted(set(own) - set(shown))}, "
        f"not its own {sorted(set(shown) - set(own))}")
    for name, entry in shown.items():
        check_help_sentence(command, name, entry["help"],
                            has_default=any(n.startswith("(default:") for n in entry["notes"]))
    globals_ = {name for module, entries in every.items() if module.startswith("absl.")
                for name in entries}
    assert {"logtostderr", "verbosity", "flagfile"} <= globals_
    assert not re.search(r"--(\[no\])?logtostderr", short.stdout)


@pytest.mark.parametrize("command", sorted(ARGPARSE))
def test_argparse_command_help(command, outputs):
    result = outputs[command, "--help"]
    assert result.returncode == 0, result.stderr[-2000:]
    source = (REPO / (command.replace(".", "/") + ".py")).read_text()
    defined = set(re.findall(r'add_argument\(\s*"--(\w+)"', source))
    assert defined
    helps, name = {}, None
    for line in result.stdout.splitlines():
        if m := re.match(r"^  (?:-\w, )?--(\w+)(?: [A-Z_]+)?(?:\s{2,}(.*))?$", line):
            name = m.group(1)
            helps[name] = (m.group(2) or "").strip()
        elif name and line.startswith("      "):
            helps[name] += " " + line.strip()
        else:
            name = None
    assert defined <= set(helps), sorted(defined - set(helps))
    for name in defined:
        check_help_sentence(command, name, helps[name], has_default=False)
    assert "logtostderr" not in result.stdout


def test_flags_of_an_app_module_show_under_a_thin_main(tmp_path):
    """A ``__main__`` that only calls an app module's entry point: --help lists the app
    module's flags (they are the command's own) and exits 0."""
    (tmp_path / "someapp.py").write_text(
        "from absl import flags\n"
        "flags.DEFINE_integer('widgets', 3, 'Widgets to make per batch.')\n"
        "def main(argv):\n"
        "    print('ran with', flags.FLAGS.widgets)\n")
    (tmp_path / "thin_command.py").write_text(
        '"""A thin command."""\n'
        "import someapp\n"
        "from runkit.cli import run_with_flagfiles\n"
        "run_with_flagfiles(someapp.main)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    command = [sys.executable, str(tmp_path / "thin_command.py")]
    result = subprocess.run([*command, "--help"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--widgets: Widgets to make per batch." in result.stdout
    assert "(default: '3')" in result.stdout
    ran = subprocess.run([*command, "--widgets=5"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0 and "ran with 5" in ran.stdout, ran.stderr
