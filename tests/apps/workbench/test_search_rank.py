"""Search tiers of the workbench's feature list (apps.workbench.search_rank)."""

from apps.workbench.search_rank import PARTIAL, MatchKeys, match_tier, normalize, rule_terms


def test_rule_terms_are_the_positive_conditions_without_thresholds():
    text = ("(Swim Speed Up ≥15 and Ninja Squid) or (Swim Speed Up ≥15 and Opening Gambit and "
            "no Ninja_Squid)")
    assert rule_terms(text) == {"swim speed up", "ninja squid", "opening gambit"}
    assert rule_terms("class: charger and no Comeback and weapon: Splat Dualies") == {
        "class: charger", "charger", "weapon: splat dualies", "splat dualies"}
    assert rule_terms("no rule") == set() and rule_terms("") == set()
    assert rule_terms("Ink Saver Main >=6") == {"ink saver main"}


def test_normalize():
    assert normalize("  Stealth_Slayer  jump ") == "stealth slayer jump"


def _keys(concept="", label="", rule="", extra=""):
    search = " ".join([concept, label, rule, extra, "f3 3"]).lower()
    return MatchKeys.of(3, [concept, label], rule, search)


def test_tiers_exact_then_name_words_then_rule_words_then_partial():
    concept = _keys(concept="stealth_slayer")
    rule = _keys(rule="Quick Super Jump ≥6 and Stealth Jump")
    label = _keys(label="Zebra stacker")
    assert match_tier("stealth_slayer", concept) == 0
    assert match_tier("Stealth Slayer", concept) == 0
    assert match_tier("stealth jump", rule) == 0
    assert match_tier("zebra stacker", label) == 0
    assert match_tier("f3", rule) == 0 and match_tier("3", rule) == 0
    assert match_tier("stealth", concept) == 1
    assert match_tier("zebra", label) == 1
    assert match_tier("stealth", rule) == 2
    assert match_tier("jump super", rule) == 2
    assert match_tier("stealt", concept) == PARTIAL
    assert match_tier("stealt", rule) == PARTIAL
    assert match_tier("stealth", _keys(extra="stealth_jump_3")) == PARTIAL  # a token only
    assert match_tier("stealth zebra", rule) is None
    assert match_tier("", rule) is None


def test_a_negated_condition_is_only_a_partial_match():
    keys = _keys(rule="Opening Gambit and no Ninja Squid")
    assert match_tier("ninja squid", keys) == PARTIAL
    assert match_tier("opening gambit", keys) == 0
