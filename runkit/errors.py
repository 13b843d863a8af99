"""The two kinds of error a command reports as one ``error:`` line (see :mod:`runkit.cli`)."""


class UserError(Exception):
    """A mistake the user can fix (the message says what and where)."""


class RunFault(RuntimeError):
    """A run stopped for a reason the message explains (a non-finite loss, damaged
    checkpoints, a busy workdir); its files are left as the message says."""
