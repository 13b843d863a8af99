"""Build completion: always legal, keeps what was observed, and the beam is exact on toy scorers."""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from primary.allocator import allocate
from primary.builds import check_ap_legal, check_slots_legal, slots_to_ap
from primary.completion import (
    TOKEN_ABILITY,
    TOKEN_LEVEL,
    complete_build,
    complete_builds,
    resolve_weapon,
)
from primary.vocab import (
    ABILITIES,
    ABILITY_INDEX,
    ABILITY_TOKENS,
    BuildError,
    Vocab,
    WeaponVocab,
    ap_to_token_multihot,
)
from tests.tiny_setup import primary_for, tiny_world

REPO = Path(__file__).resolve().parents[2]


def hide_slots(ap: np.ndarray, k: int, rng) -> np.ndarray:
    """A full build's AP with ``k`` of its 12 slot items removed."""
    alloc = allocate(ap.astype(np.int64))
    items = [(c, 10) for c in alloc.mains] + [(c, 3) for c in alloc.subs]
    out = ap.astype(np.int64).copy()
    for i in rng.choice(12, size=k, replace=False):
        out[items[i][0]] -= items[i][1]
    return out


def assert_legal_and_kept(mains, subs, ap, observed):
    assert check_slots_legal(mains, subs).all()
    assert check_ap_legal(ap).all()
    np.testing.assert_array_equal(slots_to_ap(mains, subs), ap)
    assert (ap.astype(np.int64) >= observed).all()


def test_every_completion_is_legal_and_keeps_the_observed():
    builds, vocab, weapon_vocab = tiny_world()
    model = primary_for(vocab, weapon_vocab)
    rng = np.random.default_rng(0)
    observed = np.stack([hide_slots(builds.ap[i % len(builds)], 1 + i % 12, rng)
                         for i in range(36)])
    # Some rows from scratch, some with only odd AP values that sit on no threshold.
    observed[0] = 0
    observed[1] = 0
    observed[1, ABILITY_INDEX["swim_speed_up"]] = 13
    observed[1, ABILITY_INDEX["ink_saver_sub"]] = 1
    weapons = builds.weapons[np.arange(36) % len(builds)]
    for beam in (1, 3):
        out = complete_builds(model, vocab, weapon_vocab, weapons, observed, beam_size=beam,
                              rows_per_call=36, fixed_width=True)
        assert_legal_and_kept(out.mains, out.subs, out.ap, observed)
        assert np.isfinite(out.score).all()


def test_ranked_builds_are_distinct_legal_and_best_first():
    builds, vocab, weapon_vocab = tiny_world()
    model = primary_for(vocab, weapon_vocab)
    rng = np.random.default_rng(1)
    observed = np.stack([hide_slots(b, 6, rng) for b in builds.ap])
    out = complete_builds(model, vocab, weapon_vocab, builds.weapons, observed, beam_size=4,
                          rows_per_call=36, fixed_width=True)
    ranked = out.ranked
    assert ranked.ap.shape == (len(builds), 4, len(ABILITIES))
    # The first ranked build is the best build.
    np.testing.assert_array_equal(ranked.ap[:, 0], out.ap)
    np.testing.assert_array_equal(ranked.score[:, 0], out.score)
    for i in range(len(builds)):
        real = np.isfinite(ranked.score[i])
        assert real[0] and (real[:real.sum()]).all()  # missing builds come last
        scores = ranked.score[i, real]
        assert (np.diff(scores) <= 0).all()
        assert len({tuple(row) for row in ranked.ap[i, real]}) == real.sum()
        assert_legal_and_kept(ranked.mains[i, real], ranked.subs[i, real], ranked.ap[i, real],
                              observed[i][None])
    # A beam of one ranks one build.
    greedy = complete_builds(model, vocab, weapon_vocab, builds.weapons, observed, beam_size=1,
                             rows_per_call=36, fixed_width=True)
    assert greedy.ranked.ap.shape[1] == 1
    np.testing.assert_array_equal(greedy.ranked.ap[:, 0], greedy.ap)


def test_single_completion_has_legal_distinct_runners_up():
    builds, vocab, weapon_vocab = tiny_world()
    model = primary_for(vocab, weapon_vocab)
    obs = {"ninja_squid": 10, "swim_speed_up": 12}
    res = complete_build(model, vocab, weapon_vocab, int(builds.weapons[0]), obs, beam_size=4,
                         fixed_width=True)
    every = (res.best,) + res.runners_up
    for b in every:
        row = np.array([[b.ap.get(a, 0) for a in ABILITIES]])
        assert_legal_and_kept(b.mains[None], b.subs[None], row,
                              np.array([[obs.get(a, 0) for a in ABILITIES]]))
        assert b.pieces[1].main == "ninja_squid"
        assert len(b.tokens) > 0 and b.to_dict()["pieces"][0]["piece"] == "head"
    assert len({tuple(sorted(b.ap.items())) for b in every}) == len(every)
    assert [b.score for b in every] == sorted((b.score for b in every), reverse=True)
    assert "clothes" in res.best.describe()


# ----------------------------------------------------------------------------- toy scorers

VOCAB = Vocab.canonical()
WEAPONS = WeaponVocab.from_game_ids([40])
TOK = {t: VOCAB.token_to_id[t] for t in ABILITY_TOKENS}


def toy_logits_fn(base: dict, pairs: dict, other: float = -4.0):
    """Logits ``base[t]`` (``other`` for any other token) plus ``pairs[(s, t)]`` when ``s`` is in
    the input: a scorer whose exact optimum can be found by enumerating token sets."""
    b = np.full(len(VOCAB), other, np.float32)
    for t, v in base.items():
        b[TOK[t]] = v
    w = np.zeros((len(VOCAB), len(VOCAB)), np.float32)
    for (s, t), v in pairs.items():
        w[TOK[s], TOK[t]] = v
    b, w = jnp.asarray(b), jnp.asarray(w)

    @jax.jit
    def fn(tokens, weapons, key_padding_mask):
        hot = (jax.nn.one_hot(tokens, len(VOCAB)) * ~key_padding_mask[..., None]).sum(1)
        return b[None, :] + jnp.minimum(hot, 1.0) @ w

    return fn, np.asarray(b), np.asarray(w)


def exhaustive_best(start: np.ndarray, b: np.ndarray, w: np.ndarray, universe: list[str]):
    """Best score over every sequence of moves inside ``universe`` (DP over the rows reached)."""
    from primary.vocab import ap_to_token_multihot

    def logits_of(row):
        hot = ap_to_token_multihot(row[None])[0]
        ids = VOCAB.ability_token_ids
        present = np.zeros(len(VOCAB))
        present[ids[hot]] = 1.0
        return (b + present @ w)[ids]  # (138,) in ABILITY_TOKENS order

    best = {tuple(start): 0.0}
    frontier = [start]
    while frontier:
        nxt = []
        for row in frontier:
            s = best[tuple(row)]
            ell = logits_of(row)
            hot = ap_to_token_multihot(row[None])[0]
            for t in universe:
                j = ABILITY_TOKENS.index(t)
                if hot[j]:
                    continue
                new = row.copy()
                new[TOKEN_ABILITY[j]] = max(new[TOKEN_ABILITY[j]], TOKEN_LEVEL[j])
                if not allocate(new).feasible:
                    continue
                gain = float(ell[ap_to_token_multihot(new[None])[0] & ~hot].sum())
                if s + gain > best.get(tuple(new), -np.inf) + 1e-9:
                    best[tuple(new)] = s + gain
                    nxt.append(new)
        frontier = nxt
    row, score = max(best.items(), key=lambda kv: kv[1])
    return np.array(row), score


def run_toy(base, pairs, observed, beam, other=-4.0):
    fn, b, w = toy_logits_fn(base, pairs, other)
    start = np.zeros(len(ABILITIES), np.int64)
    for a, v in observed.items():
        start[ABILITY_INDEX[a]] = v
    out = complete_builds(None, VOCAB, WEAPONS, np.array([40]), start[None], beam_size=beam,
                          logits_fn=fn)
    universe = sorted(set(base) | {t for p in pairs for t in p})
    want_row, want = exhaustive_best(start, b, w, universe)
    return out, want_row, want


def test_beam_is_exact_where_greedy_is_not():
    # comeback and tenacity both need the head main. comeback looks better alone, but
    # tenacity makes swim_speed_up_3 and _6 worth much more: greedy takes the bait.
    base = {"comeback": 1.0, "tenacity": 0.9, "swim_speed_up_3": -1.0, "swim_speed_up_6": -1.0}
    pairs = {("tenacity", "swim_speed_up_3"): 4.0, ("tenacity", "swim_speed_up_6"): 4.0}
    greedy, want_row, want = run_toy(base, pairs, {}, beam=1)
    assert want == pytest.approx(0.9 + 3.0 + 3.0)
    assert greedy.row_scores[0, 0] == pytest.approx(1.0)
    beam, _, _ = run_toy(base, pairs, {}, beam=3)
    assert beam.row_scores[0, 0] == pytest.approx(want)
    np.testing.assert_array_equal(beam.rows[0, 0], want_row)
    assert beam.mains[0, 0] == ABILITY_INDEX["tenacity"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_matches_exhaustive_search_on_random_toys(seed):
    # 8 tokens reach at most 3 * 2 * 3 * 2 * 2 * 2 = 144 rows; every other token costs so much
    # that a row holding one ranks below all of them. A beam of 160 then keeps every row
    # worth keeping, so it must find the exact optimum over orders and sets.
    rng = np.random.default_rng(seed)
    universe = ["ninja_squid", "haunt", "comeback", "swim_speed_up_3", "swim_speed_up_6",
                "ink_saver_main_3", "run_speed_up_3", "quick_respawn_29"]
    base = {t: float(rng.normal(0.0, 1.5)) for t in universe}
    pairs = {(s, t): float(rng.normal(0.0, 2.0))
             for s in universe for t in universe if s != t and rng.random() < 0.4}
    observed = {"special_charge_up": 21} if seed == 2 else {}
    out, want_row, want = run_toy(base, pairs, observed, beam=160, other=-1000.0)
    assert out.row_scores[0, 0] == pytest.approx(want, abs=1e-4)
    np.testing.assert_array_equal(out.rows[0, 0], want_row)
    # A narrow beam never beats the optimum (the search only visits legal rows).
    narrow, _, _ = run_toy(base, pairs, observed, beam=2, other=-1000.0)
    assert narrow.row_scores[0, 0] <= want + 1e-4


def test_each_build_gets_its_own_logits_inputs():
    # A scorer that likes one token, named per build by logits_inputs: each completion takes
    # its own token and is what completing that build alone gives. Calls of 4 rows, so a
    # step's 10 rows span three calls, the last with filler rows.
    favourites = ["ninja_squid", "comeback", "swim_speed_up_3", "run_speed_up_6", "haunt"]
    ids = np.array([TOK[t] for t in favourites], np.int32)

    def fn(tokens, weapons, key_padding_mask, favourite):
        assert favourite.shape == (tokens.shape[0],)
        return jnp.where(jnp.arange(len(VOCAB))[None, :] == favourite[:, None], 5.0, -4.0)

    n = len(favourites)
    empty = np.zeros((n, len(ABILITIES)), np.int64)
    out = complete_builds(None, VOCAB, WEAPONS, np.full(n, 40), empty, beam_size=2,
                          logits_fn=fn, rows_per_call=4, logits_inputs=(ids,))
    hot = ap_to_token_multihot(out.ap)
    for i, t in enumerate(favourites):
        assert hot[i, ABILITY_TOKENS.index(t)] and hot[i].sum() > 1, t
        alone = complete_builds(None, VOCAB, WEAPONS, np.array([40]), empty[:1], beam_size=2,
                                logits_fn=fn, logits_inputs=(ids[i:i + 1],))
        np.testing.assert_array_equal(alone.ap[0], out.ap[i])
        assert alone.best_build(0, 40, empty[0]).to_dict() == out.best_build(
            i, 40, empty[i]).to_dict()
    with pytest.raises(ValueError, match=r"logits_inputs\[0\] has 4 entries"):
        complete_builds(None, VOCAB, WEAPONS, np.full(n, 40), empty, logits_fn=fn,
                        logits_inputs=(ids[:4],))


# ----------------------------------------------------------------------------- inputs


def test_weapons_by_id_name_or_key():
    wv = WeaponVocab.from_game_ids([40, 1010])
    assert resolve_weapon(40, wv) == 40
    assert resolve_weapon("40", wv) == 40
    assert resolve_weapon("splattershot", wv) == 40
    assert resolve_weapon("sshooter", wv) == 40
    with pytest.raises(BuildError, match="unknown weapon 'Nope'"):
        resolve_weapon("Nope", wv)
    with pytest.raises(BuildError, match="game id 0"):
        resolve_weapon(0, wv)


def test_weapons_by_any_name_and_models_that_lack_them():
    wv = WeaponVocab.from_game_ids([40, 8020, 77777])
    for text in ("Shooter_Normal_00", "SPLATTERSHOT", " sshooter ", np.int64(40)):
        assert resolve_weapon(text, wv) == 40
    assert resolve_weapon("mint decavitator", wv) == 8020
    assert resolve_weapon("77777", wv) == 77777  # an id the model knows, outside the table
    with pytest.raises(BuildError, match=r"did you mean 'Splattershot'"):
        resolve_weapon("Splatershot", wv)
    with pytest.raises(BuildError, match=r"Charcoal Decavitator\) is not in weapon vocab: this "
                                         "model was not trained on it"):
        resolve_weapon("Charcoal Decavitator", wv)


def test_impossible_observed_names_why():
    fn, _, _ = toy_logits_fn({}, {})
    with pytest.raises(BuildError, match="head main slot"):
        complete_build(None, VOCAB, WEAPONS, 40, {"comeback": 10, "tenacity": 10}, logits_fn=fn)
    with pytest.raises(BuildError, match=r"row 1\).*sub slots"):
        obs = np.zeros((2, len(ABILITIES)), np.int64)
        obs[1, ABILITY_INDEX["swim_speed_up"]] = 57
        obs[1, ABILITY_INDEX["run_speed_up"]] = 3
        complete_builds(None, VOCAB, WEAPONS, np.array([40, 40]), obs, logits_fn=fn)
    with pytest.raises(ValueError, match="beam_size"):
        complete_build(None, VOCAB, WEAPONS, 40, {}, logits_fn=fn, beam_size=0)


@pytest.fixture(scope="module")
def primary_dir(tmp_path_factory):
    from primary.model_dir import save_primary

    _, vocab, weapon_vocab = tiny_world()
    d = tmp_path_factory.mktemp("primary") / "model"
    save_primary(d, primary_for(vocab, weapon_vocab), vocab, weapon_vocab)
    return d


def test_cli_errors_name_the_bad_value(primary_dir):
    from primary.complete import run
    from runkit.errors import UserError

    with pytest.raises(UserError, match="not valid JSON"):
        run(str(primary_dir), "40", "{bad", 2, False)
    with pytest.raises(UserError, match="JSON object"):
        run(str(primary_dir), "40", "[1]", 2, False)
    with pytest.raises(BuildError, match="unknown ability 'jump'"):
        run(str(primary_dir), "40", '{"jump": 3}', 2, False)
    with pytest.raises(BuildError, match="unknown weapon 'Nope'"):
        run(str(primary_dir), "Nope", "{}", 2, False)
    with pytest.raises(FileNotFoundError, match="not a primary model directory"):
        run(str(primary_dir.parent / "missing"), "40", "{}", 2, False)
    # Huge values and beams are refused up front, naming the value (no overflow, no hang).
    with pytest.raises(BuildError, match=r"AP of 'swim_speed_up' is 10{23}, more than a whole "
                                         r"build holds \(57\) in --abilities"):
        run(str(primary_dir), "40", '{"swim_speed_up": 100000000000000000000000}', 2, False)
    with pytest.raises(UserError, match="--beam_size must be at most 64, got 100000"):
        run(str(primary_dir), "40", "{}", 100000, False)
    text = run(str(primary_dir), "Splattershot", '{"ninja_squid": 10}', 2, False)
    # In-game names, as the lab and the report show them, and what the score means.
    assert "clothes  main Ninja Squid " in text and "ninja_squid" not in text
    assert text.splitlines()[-1].startswith("score: the model's log-odds summed over")


def test_cli_takes_english_and_game_names(primary_dir):
    from primary.complete import run

    a = run(str(primary_dir), "Shooter_Normal_00",
            '{"Ninja Squid": 10, "SquidMove_Up": 6}', 2, True)
    b = run(str(primary_dir), "40", '{"ninja_squid": 10, "swim_speed_up": 6}', 2, True)
    assert a == b
    with pytest.raises(BuildError, match=r"--abilities: unknown ability 'Ninja Squidd' \(did you "
                                         r"mean 'Ninja Squid'\?\)"):
        run(str(primary_dir), "40", '{"Ninja Squidd": 10}', 2, False)


@pytest.mark.parametrize("flag, first, count", [("--list_weapons", "id", 174 + 2),
                                                ("--list_abilities", "ability", 26 + 1)])
def test_cli_lists_weapons_and_abilities(flag, first, count):
    proc = subprocess.run([sys.executable, "-m", "primary.complete", flag], cwd=REPO,
                          capture_output=True, text=True,
                          env={"JAX_PLATFORMS": "cpu", "PATH": ""}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == count and lines[0].split()[0] == first
    if flag == "--list_weapons":
        assert "8021  Charcoal Decavitator" in proc.stdout
        assert "48    Plastic-Bottle Shot Replica   shooter    Splat Bomb     Triple Inkstrike" \
            in lines


def test_cli_without_weapon_is_one_error_line():
    proc = subprocess.run([sys.executable, "-m", "primary.complete", "--weapon=40"], cwd=REPO,
                          capture_output=True, text=True,
                          env={"JAX_PLATFORMS": "cpu", "PATH": ""}, timeout=120)
    assert proc.returncode == 1
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [
        "error: --primary_dir is required (or --list_weapons / --list_abilities)"]


def test_cli_prints_one_error_line(primary_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "primary.complete", f"--primary_dir={primary_dir}",
         "--weapon=Splattershot", '--abilities={"comeback": 10, "tenacity": 10}'],
        cwd=REPO, capture_output=True, text=True, env={"JAX_PLATFORMS": "cpu", "PATH": ""},
        timeout=120)
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "head main slot" in errors[0]


def test_fill_can_give_an_empty_main_a_main_only_ability_of_another_piece():
    # Swim's two mains sit on head and clothes, shoes is empty. ninja_squid (clothes) is the
    # least unlikely option, so swim moves from clothes to shoes to make room.
    fn, _, _ = toy_logits_fn({"ninja_squid": -1.0}, {}, other=-4.0)
    res = complete_build(None, VOCAB, WEAPONS, 40, {"swim_speed_up": 20, "ink_saver_main": 27},
                         logits_fn=fn, beam_size=1)
    swim, ninja = ABILITY_INDEX["swim_speed_up"], ABILITY_INDEX["ninja_squid"]
    np.testing.assert_array_equal(res.best.mains, [swim, ninja, swim])
    assert res.best.score == pytest.approx(-1.0)
