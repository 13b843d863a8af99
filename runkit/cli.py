"""Command-line entry points: user mistakes become one ``error:`` line and exit status 1.

A user mistake (bad path, bad data, bad setting) raises one of :data:`USER_ERRORS`
with a message naming the bad value; the command prints that message instead of a
traceback. Programming errors still show their traceback.
"""

from __future__ import annotations

import functools
import re
import sys

from runkit.errors import RunFault, UserError
from runkit.flags import expand_flagfiles

# OSError covers missing files, permissions and a full disk; ValueError the bad settings
# and malformed data the readers and configs refuse (UnicodeDecodeError and
# json.JSONDecodeError are ValueErrors).
USER_ERRORS = (UserError, RunFault, ValueError, OSError)
HELP_HINT = "run the command with --help to list its flags"


def report_user_errors(main):
    """Wrap an absl ``main(argv)``: a user error prints ``error: <message>`` to stderr and
    returns 1 (absl's ``app.run`` turns the return value into the exit status)."""

    from absl.app import UsageError

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except UsageError as e:  # absl would print the whole help before the message
            print(f"error: {e}; {HELP_HINT}", file=sys.stderr)
            return 1
        except USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    return wrapped


class _HelpExitsZero:
    """absl's help flags exit with status 1; a user who asks for help made no mistake."""

    def parse(self, arg):
        try:
            super().parse(arg)
        except SystemExit:
            raise SystemExit(0) from None


def _help_flags_exit_zero() -> None:
    """Put exit-0 versions of absl's --help, --helpshort, --helpfull and --helpxml in
    place of absl's own (idempotent)."""
    from absl import app, flags

    app.define_help_flags()
    for base in (app.HelpFlag, app.HelpshortFlag, app.HelpfullFlag, app.HelpXMLFlag):
        flag = type(base.__name__, (_HelpExitsZero, base), {})()
        if isinstance(flags.FLAGS[flag.name], _HelpExitsZero):
            continue
        for name in (flag.name, flag.short_name):
            if name:
                delattr(flags.FLAGS, name)
        flags.DEFINE_flag(flag, module_name=app.__name__)


def _adopt_command_flags(main) -> None:
    """absl's --help lists the flags of the main module only; the flags of the module
    that holds ``main`` are the command's own, also when that module is not ``__main__``
    (a command whose ``__main__`` only calls an app's entry point)."""
    from absl import flags

    module = getattr(main, "__module__", "__main__")
    if module != "__main__":
        for flag in flags.FLAGS.get_flags_for_module(module):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def _parse_flags(argv):
    """absl's flag parsing, with a bad flag (unknown, malformed, a required one missing) as
    one ``error:`` line and exit status 1 instead of absl's ``FATAL`` lines."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = re.sub(r"flag --(\w+)=None: Flag --\1 must have a value other than None\.?",
                         r"--\1 is required", str(e)).rstrip(".")
        print(f"error: {message}; {HELP_HINT}", file=sys.stderr)
        sys.exit(1)


def run_with_flagfiles(main) -> None:
    """``absl.app.run(main)`` on the command line with its flagfiles read in first
    (:func:`runkit.flags.expand_flagfiles`: a flagfile may name a neighbour, and the
    command then works from any directory). A missing or malformed flagfile, an unknown
    or malformed flag, or a required one missing prints one ``error:`` line and exits with
    status 1. ``--help`` lists every flag of the command
    (absl's own flags only under ``--helpfull``) and exits with status 0."""
    from absl import app

    try:
        argv = expand_flagfiles(sys.argv)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    _help_flags_exit_zero()
    _adopt_command_flags(main)
    app.run(main, argv=argv, flags_parser=_parse_flags)
