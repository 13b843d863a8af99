"""Complete a partial gear build from the command line.

    python -m primary.complete --primary_dir=DIR --weapon=NAME \\
        --abilities='{"ninja_squid": 10, "Swim Speed Up": 12}' [--beam_size=4] [--json]
    python -m primary.complete --list_weapons     (or --list_abilities)

Prints the best full build as a player reads it (gear piece, main, subs), then the
beam's runners-up. Weapons and abilities are taken by any of their names, any case. A bad
weapon, ability or JSON prints one ``error:`` line (exit 1), with the closest names for
a near miss.
"""

from __future__ import annotations

import json
from pathlib import Path

from runkit.cli import report_user_errors
from runkit.errors import UserError

SCORE_NOTE = ("score: the model's log-odds summed over the ability tokens the completion "
              "added; higher is better (the model finds the build likelier).")


MAX_BEAM = 64


def parse_abilities(text: str) -> dict[str, int]:
    """``--abilities`` JSON -> ``{ability: AP}``, each ability by the project's name (any
    name :func:`primary.vocab.resolve_ability` takes); values are checked later."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--abilities is not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise UserError(f"--abilities must be a JSON object of ability: AP, got {text!r}")
    from primary.vocab import resolve_abilities

    return resolve_abilities(value, where="--abilities")


def run(primary_dir: str, weapon: str, abilities: str, beam_size: int, as_json: bool) -> str:
    """The text the command prints."""
    from primary.allocator import min_ap_row
    from primary.completion import check_observed, complete_build
    from primary.model_dir import load_primary

    if beam_size < 1:
        raise UserError(f"--beam_size must be at least 1, got {beam_size}")
    if beam_size > MAX_BEAM:  # the search's work grows with the beam: a huge one never ends
        raise UserError(f"--beam_size must be at most {MAX_BEAM}, got {beam_size}")
    observed = parse_abilities(abilities)
    # Checked before the model loads: a mistake is reported at once.
    check_observed(min_ap_row(observed, where="--abilities")[None], where="--abilities")
    if not (Path(primary_dir) / "config.json").is_file():
        raise FileNotFoundError(f"--primary_dir {primary_dir} is not a primary model directory "
                                "(no config.json)")
    model, vocab, weapon_vocab = load_primary(primary_dir)
    result = complete_build(model, vocab, weapon_vocab, weapon, observed, beam_size=beam_size)
    if as_json:
        return json.dumps(result.to_dict(), indent=1)
    parts = [result.best.describe()]
    for i, other in enumerate(result.runners_up, 1):
        parts.append(f"runner-up {i}: " + other.describe())
    return "\n\n".join(parts) + "\n\n" + SCORE_NOTE


@report_user_errors
def main(argv):
    from absl import app, flags, logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # checkpoint-library chatter hides the build
    f = flags.FLAGS
    if f.list_weapons or f.list_abilities:
        from primary.vocab import ability_table_text
        from primary.weapons import weapon_table_text

        print(weapon_table_text() if f.list_weapons else ability_table_text())
        return 0
    missing = [name for name in ("primary_dir", "weapon") if not f[name].value]
    if missing:
        raise UserError(f"--{missing[0]} is required (or --list_weapons / --list_abilities)")
    from runkit.compile_cache import use_persistent_cache

    use_persistent_cache()  # a second call reads the beam search's programs from disk
    print(run(f.primary_dir, f.weapon, f.abilities, f.beam_size, f.json))
    return 0


if __name__ == "__main__":
    from absl import flags

    from runkit.cli import run_with_flagfiles

    flags.DEFINE_string("primary_dir", None, "Primary model directory (config.json, params/); "
                        "required.")
    flags.DEFINE_string("weapon", None, "The build's weapon: game id, stat.ink key, internal "
                        "or English name (any case); required.")
    flags.DEFINE_string("abilities", "{}", 'Observed abilities as JSON {"ability": min AP}; '
                        "an ability by its name, English name or game code (any case).")
    flags.DEFINE_integer("beam_size", 4,
                         f"Beam width of the search (1 = greedy, at most {MAX_BEAM}).")
    flags.DEFINE_bool("json", False, "Print the result as JSON.")
    flags.DEFINE_bool("list_weapons", False, "Print every weapon (game id, English name, "
                      "class, sub, special) and exit.")
    flags.DEFINE_bool("list_abilities", False, "Print every ability (name, English name, "
                      "game code) and exit.")
    run_with_flagfiles(main)
