"""absl flags for a frozen config dataclass: one flag per field, read back into the config.

Both training commands (``primary.train``, ``sae_jax.train``) expose every field
of their config this way, so a flagfile and the command line can set anything
the library function takes.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping

from absl import flags

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
           float: flags.DEFINE_float, str: flags.DEFINE_string}


def define_config_flags(cls, help_texts: Mapping[str, str], *, skip=()) -> None:
    """Define ``--<field>`` for each field of ``cls`` (tuples as comma lists), with the
    field's default; ``help_texts`` gives the help of a field, else its qualified name."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind, doc = hints[f.name], help_texts.get(f.name, f"{cls.__name__}.{f.name}")
        if typing.get_origin(kind) is tuple:
            flags.DEFINE_list(f.name, [str(v) for v in f.default], doc)
        elif kind in _DEFINE:
            _DEFINE[kind](f.name, f.default, doc)
        else:
            raise TypeError(f"no flag type for {cls.__name__}.{f.name}: {kind}")


def config_from_flags(cls, values=flags.FLAGS, *, skip=()):
    """The frozen config from parsed flags; comma-list flags become tuples of the field's
    element type, and a value that does not convert is an error naming the flag."""
    hints = typing.get_type_hints(cls)
    settings = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        value = values[f.name].value
        if typing.get_origin(hints[f.name]) is tuple:
            element = (typing.get_args(hints[f.name]) or (str,))[0]
            try:
                value = tuple(element(s) for s in value if str(s).strip())
            except ValueError:
                raise ValueError(f"--{f.name} must be a comma-separated list of "
                                 f"{element.__name__}, got {','.join(value)!r}") from None
        settings[f.name] = value
    return cls(**settings)
