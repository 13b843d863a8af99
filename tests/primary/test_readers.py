"""stat.ink CSV and SplatNLP TSV readers, and the load_builds entry point."""

import csv
import json

import numpy as np
import pytest

from primary.sources import SOURCES, default_vocabs, load_builds
from primary.splatnlp_tsv import read_splatnlp_tsv, write_splatnlp_tsv
from primary.statink import PLAYER_SLOTS, StatInkError, read_statink_csv
from primary.synthetic import generate_builds
from primary.vocab import ABILITIES, Vocab, WeaponVocab
from primary.weapons import weapon_by_statink_key
from tests.fixture_paths import SPLATNLP_FIXTURE

FIXTURE = str(SPLATNLP_FIXTURE)
HEAD = ["season", "period", "game-ver", "lobby", "mode", "stage", "time", "win"]
TAIL = ["medal1-grade", "medal1-name", "event"]
PLAYER_COLS = ["weapon", "kill-assist", "kill", "assist", "death", "special", "inked",
               "abilities"]


def _units(build):
    """A slot-level build as stat.ink units: mains 1.0, subs 0.3 each."""
    return json.dumps({a: round(ap / 10, 1) for a, ap in build.items()})


GOOD = [
    ("sshooter", {"ninja_squid": 10, "swim_speed_up": 16, "quick_super_jump": 13,
                  "ink_resistance_up": 9, "run_speed_up": 9}),
    ("splatcharger", {"ink_saver_main": 13, "quick_super_jump": 16, "respawn_punisher": 10,
                      "run_speed_up": 12, "sub_resistance_up": 6}),
    ("nova", {"swim_speed_up": 57}),
]


def _write_csv(path, players_by_row, *, with_season=True, drop_columns=()):
    header = (HEAD if with_season else HEAD[1:]) + [
        f"{s}-{c}" for s in PLAYER_SLOTS for c in PLAYER_COLS
    ] + (TAIL if with_season else TAIL[:-1])
    header = [h for h in header if h not in drop_columns]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        for players in players_by_row:
            row = {h: "x" for h in header}
            for slot in PLAYER_SLOTS:
                weapon, abilities = players.get(slot, ("", ""))
                for c in PLAYER_COLS:
                    key = f"{slot}-{c}"
                    if key in row:
                        row[key] = {"weapon": weapon, "abilities": abilities}.get(c, "1")
            w.writerow(row)
    return path


def test_statink_reads_good_and_counts_bad(tmp_path):
    rows = [
        {
            "A1": (GOOD[0][0], _units(GOOD[0][1])),
            "A2": (GOOD[1][0], _units(GOOD[1][1])),
            "A3": ("no_such_weapon", _units(GOOD[0][1])),
            "A4": ("wakaba", ""),
            "B1": ("wakaba", "{not json"),
            "B2": ("wakaba", json.dumps({"swim_speed": 1.0})),
            "B3": ("wakaba", json.dumps({"swim_speed_up": 1.0})),
            "B4": ("wakaba", json.dumps({"ninja_squid": 0.3, "swim_speed_up": 5.4})),
        },
        {"A1": (GOOD[2][0], _units(GOOD[2][1])), "B1": ("wakaba", "[1, 2]")},
    ]
    builds, summary = read_statink_csv(_write_csv(tmp_path / "battles.csv", rows))
    assert len(builds) == summary.kept == 3
    assert summary.rows == 2 and summary.players_seen == 10
    assert dict(summary.dropped) == {
        "unknown_weapon": 1,
        "missing_abilities": 1,
        "malformed_abilities": 2,
        "unknown_ability": 1,
        "wrong_total": 1,
        "illegal_slots": 1,
    }
    assert summary.kept + sum(summary.dropped.values()) == summary.players_seen
    for i, (key, build) in enumerate(GOOD):
        assert builds.weapons[i] == weapon_by_statink_key(key).game_id
        assert builds.build(i) == build
    assert builds.check_legal().all()
    text = str(summary)
    assert "3 builds kept" in text and "unknown_weapon: 1" in text and "battles.csv" in text


def test_statink_without_season_and_event_columns(tmp_path):
    rows = [{"B4": (GOOD[0][0], _units(GOOD[0][1]))}]
    builds, summary = read_statink_csv(_write_csv(tmp_path / "old.csv", rows, with_season=False))
    assert len(builds) == 1 and summary.players_seen == 1


def test_statink_missing_columns_is_an_error_naming_file_and_columns(tmp_path):
    path = _write_csv(tmp_path / "cut.csv", [{}], drop_columns=("B3-abilities", "A1-weapon"))
    with pytest.raises(StatInkError, match=r"cut\.csv.*A1-weapon, B3-abilities"):
        read_statink_csv(path)


def test_statink_no_valid_build_is_an_error(tmp_path):
    path = _write_csv(tmp_path / "bad.csv", [{"A1": ("sshooter", "")}])
    with pytest.raises(StatInkError, match=r"bad\.csv holds no valid"):
        read_statink_csv(path)


def test_tsv_round_trip_of_synthetic_builds(tmp_path):
    builds = generate_builds(300, seed=2)
    vocab, wv = default_vocabs(builds)
    write_splatnlp_tsv(tmp_path / "b.tsv", builds, vocab, wv)
    back = read_splatnlp_tsv(tmp_path / "b.tsv", vocab, wv)
    np.testing.assert_array_equal(back.weapons, builds.weapons)
    for i in range(len(builds)):
        assert back.tokens(i) == builds.tokens(i)
        # AP is each ability's lower bound, never more than the original
        assert (back.ap[i] <= builds.ap[i]).all()


def test_tsv_with_fixture_vocab_order_and_specials(tmp_path):
    vocab = Vocab.load(f"{FIXTURE}/vocab.json")
    wv = WeaponVocab.load(f"{FIXTURE}/weapon_vocab.json")
    ids = [vocab.token_to_id[t] for t in ("swim_speed_up_3", "swim_speed_up_6",
                                          "swim_speed_up_12")
           if t in vocab.token_to_id]
    assert ids, "fixture vocab lacks swim speed tokens"
    path = tmp_path / "f.tsv"
    path.write_text("ability_tags\tweapon_id\textra\n"
                    f"{json.dumps(ids + [vocab.pad_id])}\t{wv.key_to_id['weapon_id_40']}\tz\n"
                    f"[{vocab.null_id}]\t0\tz\n")
    b = read_splatnlp_tsv(path, vocab, wv)
    assert b.weapons[0] == 40 and b.weapons[1] == int(wv.game_ids[0])
    top = max(int(t.rsplit("_", 1)[1]) for t in vocab.decode(ids))
    assert b.build(0) == {"swim_speed_up": top}
    assert b.build(1) == {} and b.tokens(1) == ["<NULL>"]
    assert b.ap.shape == (2, len(ABILITIES))


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("[99999]\t0", "token id 99999"),
        ("[0]\t999", "weapon id 999"),
        ("oops\t0", "not a list"),
        ("[0]\tx", "weapon_id 'x'"),
    ],
)
def test_tsv_errors_name_the_line(tmp_path, line, fragment):
    vocab, wv = default_vocabs()
    path = tmp_path / "e.tsv"
    path.write_text("ability_tags\tweapon_id\n[0]\t0\n" + line + "\n")
    with pytest.raises(ValueError, match=rf"e\.tsv line 3: .*{fragment}"):
        read_splatnlp_tsv(path, vocab, wv)


def test_tsv_unknown_token_and_missing_column(tmp_path):
    vocab = Vocab({"<PAD>": 0, "<NULL>": 1, "weird_token": 2})
    wv = WeaponVocab.from_game_ids([40])
    path = tmp_path / "u.tsv"
    path.write_text("ability_tags\tweapon_id\n[2]\t0\n")
    with pytest.raises(ValueError, match="line 2: .*weird_token"):
        read_splatnlp_tsv(path, vocab, wv)
    path.write_text("tags\tweapon_id\n[2]\t0\n")
    with pytest.raises(ValueError, match="missing columns ability_tags"):
        read_splatnlp_tsv(path, vocab, wv)


def test_load_builds_sources(tmp_path):
    assert SOURCES == ("synthetic", "statink", "splatnlp_tsv")
    syn = load_builds("synthetic", num_builds=50, seed=1)
    np.testing.assert_array_equal(syn.ap, generate_builds(50, 1).ap)
    rows = [{"A1": (k, _units(b))} for k, b in GOOD]
    csv_path = _write_csv(tmp_path / "s.csv", rows)
    assert len(load_builds("statink", path=str(csv_path))) == 3
    assert len(load_builds("statink", path=str(csv_path), num_builds=2)) == 2
    vocab, wv = default_vocabs(syn)
    write_splatnlp_tsv(tmp_path / "s.tsv", syn, vocab, wv)
    vocab.save(tmp_path / "vocab.json")
    wv.save(tmp_path / "weapon_vocab.json")
    tsv = load_builds("splatnlp_tsv", path=str(tmp_path / "s.tsv"),
                      vocab=str(tmp_path / "vocab.json"),
                      weapon_vocab=str(tmp_path / "weapon_vocab.json"))
    assert len(tsv) == 50
    with pytest.raises(ValueError, match="valid sources: synthetic, statink, splatnlp_tsv"):
        load_builds("parquet")
    with pytest.raises(ValueError, match="needs a path"):
        load_builds("statink")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_builds("statink", path=str(tmp_path / "nope.csv"))
    with pytest.raises(ValueError, match="needs vocab"):
        load_builds("splatnlp_tsv", path=str(tmp_path / "s.tsv"))


def test_default_vocabs_cover_the_sources_weapons():
    import hashlib

    from primary.builds import BuildSet
    from primary.synthetic import SYNTHETIC_WEAPON_IDS
    from primary.weapons import WEAPONS

    vocab, wv = default_vocabs()
    assert vocab == Vocab.canonical()
    # The synthetic world's vocabulary is the one every synthetic model has had (sha256 of
    # json.dumps(key_to_id, sort_keys=True), computed before the table held the whole roster).
    assert hashlib.sha256(json.dumps(wv.key_to_id, sort_keys=True).encode()).hexdigest() == (
        "96120fd2e9829d351fa450669f7b66cd3d83a6685b92ff01cd3c327d0510434a")
    assert sorted(wv.game_ids.tolist()) == sorted(SYNTHETIC_WEAPON_IDS)
    assert default_vocabs(generate_builds(500, 1))[1] == wv
    # Real data: every current kit, ids in game-id order.
    for source in ("statink", "splatnlp_tsv"):
        _, full = default_vocabs(data_source=source)
        assert full.game_ids.tolist() == sorted(w.game_id for w in WEAPONS)
        assert full.key_to_id["weapon_id_8021"] == 173
    odd = BuildSet(np.array([77777]), np.zeros((1, len(ABILITIES)), np.int16))
    _, wv2 = default_vocabs(odd)
    assert wv2.encode_game_ids(np.array([77777])).shape == (1,)
    _, wv3 = default_vocabs(odd, data_source="statink")
    assert len(wv3) == 175 and wv3.key_to_id["weapon_id_77777"] == 174
    with pytest.raises(ValueError, match="unknown data source 'csv'"):
        default_vocabs(data_source="csv")




def test_statink_keeps_a_player_of_every_current_kit(tmp_path):
    """One battle row per kit of the weapon table, every kit by its stat.ink key (the one kit
    stat.ink has no key for yet, game id 48, by its internal name): all are kept."""
    from primary.weapons import WEAPONS

    build = GOOD[0][1]
    rows = [{"A1": (w.statink_key or w.internal, _units(build))} for w in WEAPONS]
    builds, summary = read_statink_csv(_write_csv(tmp_path / "roster.csv", rows), quiet=True)
    assert summary.rows == summary.players_seen == summary.kept == len(WEAPONS) == 174
    assert not summary.dropped_total
    assert builds.weapons.tolist() == [w.game_id for w in WEAPONS]
    _, wv = default_vocabs(builds, data_source="statink")
    wv.encode_game_ids(builds.weapons, where="roster.csv")


def test_statink_summary_names_the_weapon_keys_it_dropped(tmp_path):
    rows = [{"A1": ("no_such_weapon", _units(GOOD[0][1])),
             "A2": ("no_such_weapon", _units(GOOD[0][1])),
             "A3": ("other_gun", _units(GOOD[0][1])),
             "A4": ("Splattershot", _units(GOOD[0][1]))}]
    builds, summary = read_statink_csv(_write_csv(tmp_path / "b.csv", rows), quiet=True)
    assert builds.weapons.tolist() == [40]  # a name other than the key is read too
    assert summary.unknown_weapons == {"no_such_weapon": 2, "other_gun": 1}
    assert "dropped unknown_weapon: 3 ('no_such_weapon' 2, 'other_gun' 1)" in str(summary)


def test_a_primary_trained_on_statink_data_knows_every_kit(tmp_path):
    from primary.training import PrimaryTrainConfig, prepare_data
    from primary.weapons import WEAPONS

    rows = [{"A1": ("sshooter", _units(GOOD[0][1])), "B1": ("nova", _units(GOOD[2][1]))}] * 30
    path = _write_csv(tmp_path / "two_kits.csv", rows)
    cfg = PrimaryTrainConfig(data_source="statink", data_path=str(path), num_builds=1000)
    data = prepare_data(cfg)
    assert sorted(data.weapon_vocab.game_ids.tolist()) == sorted(w.game_id for w in WEAPONS)
    synthetic = prepare_data(PrimaryTrainConfig(num_builds=300))
    assert len(synthetic.weapon_vocab) == 78
