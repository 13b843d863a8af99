"""How well a search matches a feature: the list puts exact matches of a name first.

A feature has *names* (its planted concept, its human label), *terms* (the positive
conditions of its explanation's rule: "Stealth Jump" in "Quick Super Jump ≥6 and Stealth
Jump", "shooter" in "class: shooter"; a negated "no Comeback" is no term of it) and its
search text (everything the list searches, :func:`apps.workbench.run_state.search_text`).
:func:`match_tier` grades a query against them, lower is better:

0. the query is a name, a term or the feature's id (``17``, ``f17``);
1. every word of the query is a whole word of a name ("stealth" in ``stealth_slayer``);
2. every word of the query is a whole word of a term ("stealth" in "Stealth Jump");
3. every word of the query is somewhere in the search text (a partial match);

and None when some word is nowhere. So searching "stealth" lists the stealth_slayer
feature above a rarely-firing one whose rule merely mentions Stealth Jump.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPLIT_RULE = re.compile(r"\s+(?:and|or)\s+")
_THRESHOLD = re.compile(r"\s*(?:≥|>=)\s*[\d.]+$")
_KIND = re.compile(r"^[a-z_]+:\s*")  # "class: ", "weapon: "
PARTIAL = 3


def normalize(text: str) -> str:
    """Lower case, ``_`` as a space, single spaces: ``Stealth_Slayer`` -> ``stealth slayer``."""
    return " ".join(str(text).lower().replace("_", " ").split())


def rule_terms(rule_text: str) -> set[str]:
    """The positive conditions of a rule's text, each as said and without its kind prefix
    or AP threshold (``"class: shooter"`` gives ``"class: shooter"`` and ``"shooter"``)."""
    out = set()
    for part in _SPLIT_RULE.split(normalize(rule_text).replace("(", " ").replace(")", " ")):
        part = part.strip()
        if not part or part == "no rule" or part.startswith("no "):
            continue
        part = _THRESHOLD.sub("", part)
        out.add(part)
        bare = _KIND.sub("", part)
        if bare:
            out.add(bare)
    return out


@dataclass(frozen=True)
class MatchKeys:
    """What one feature is matched on (all normalized)."""

    ids: frozenset[str]
    names: frozenset[str]
    terms: frozenset[str]
    search: str

    @classmethod
    def of(cls, feature: int, names, rule_text: str, search: str) -> MatchKeys:
        return cls(ids=frozenset({str(feature), f"f{feature}"}),
                   names=frozenset(normalize(n) for n in names if n and normalize(n)),
                   terms=frozenset(rule_terms(rule_text or "")), search=search.lower())


def _words(phrases) -> set[str]:
    return {w for p in phrases for w in p.split()}


def match_tier(query: str, keys: MatchKeys) -> int | None:
    """The tier of ``query`` for a feature (see the module docstring), None: no match."""
    words = query.lower().split()
    if not words or not all(w in keys.search for w in words):
        return None
    q = normalize(query)
    if q in keys.ids or q in keys.names or q in keys.terms:
        return 0
    q_words = set(q.split())
    if q_words <= _words(keys.names):
        return 1
    if q_words <= _words(keys.terms):
        return 2
    return PARTIAL
