"""Command-line entry points: user mistakes become one ``error:`` line and exit status 1.

A user mistake (bad path, bad data, bad setting) raises one of :data:`USER_ERRORS`
with a message naming the bad value; the command prints that message instead of a
traceback. Programming errors still show their traceback.
"""

from __future__ import annotations

import functools
import sys

from runkit.errors import RunFault, UserError
from runkit.flags import expand_flagfiles

# OSError covers missing files, permissions and a full disk; ValueError the bad settings
# and malformed data the readers and configs refuse (UnicodeDecodeError and
# json.JSONDecodeError are ValueErrors).
USER_ERRORS = (UserError, RunFault, ValueError, OSError)


def report_user_errors(main):
    """Wrap an absl ``main(argv)``: a user error prints ``error: <message>`` to stderr and
    returns 1 (absl's ``app.run`` turns the return value into the exit status)."""

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    return wrapped


def run_with_flagfiles(main) -> None:
    """``absl.app.run(main)`` on the command line with its flagfiles read in first
    (:func:`runkit.flags.expand_flagfiles`: a flagfile may name a neighbour, and the
    command then works from any directory). A missing or malformed flagfile prints one
    ``error:`` line and exits with status 1."""
    from absl import app

    try:
        argv = expand_flagfiles(sys.argv)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    app.run(main, argv=argv)
