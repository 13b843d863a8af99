"""Concept sets: the default world unchanged, custom sets planted honestly, loader errors."""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from primary.concept_sets import (
    CONCEPT_SET_FILE,
    ConceptSetError,
    concept_set_digest,
    concepts_from_json,
    concepts_to_json,
    load_concept_set,
    recorded_concept_set,
    recorded_digest,
    write_concept_set,
)
from primary.planted_concepts import CONCEPTS, concept_holds
from primary.sources import load_builds
from primary.synthetic import generate_builds, world_for
from primary.training import PrimaryTrainConfig
from primary.vocab import ABILITY_INDEX


def _digest(builds) -> str:
    h = hashlib.sha256()
    for a in (builds.weapons, builds.ap, builds.concepts):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("|".join(builds.concept_names).encode())
    return h.hexdigest()


# Digests of the built-in world's output recorded before the world took a concept set
# (70 000 builds cross the 65 536-build chunk boundary).
DEFAULT_DIGESTS = [
    (3000, 0, None, "3d34c995bbc4d726c2bb84edc845b9150d6966ce496337e754f607dfc345cb00"),
    (70_000, 7, None, "efb6e263253d390153910128c499535d1dcc14734f856e9ac6b4dc40e5692b99"),
    (500, 3, (40, 1000, 2010), "8e6c124ada58ae2c26c1ce3fdf0ad03e896a5f6ad85ea62f0fa05a3591e8d12b"),
]


@pytest.mark.parametrize("n,seed,weapons,expected", DEFAULT_DIGESTS)
def test_default_world_is_bit_identical_to_before(n, seed, weapons, expected):
    assert _digest(generate_builds(n, seed, weapons=weapons)) == expected


# ---------------------------------------------------------------- custom sets

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "concepts_example.json"

CUSTOM = [
    {"name": "jumper", "description": "Quick Super Jump and Stealth Jump.",
     "required": {"stealth_jump": 10, "quick_super_jump": 13},
     "favoured": {"swim_speed_up": 2}, "weapon_classes": {"shooter": 3, "roller": 2}},
    {"name": "saver", "required": {"ink_saver_main": 16, "ink_saver_sub": 6}},
    {"name": "three_way", "description": "three standard abilities",
     "required": {"run_speed_up": 12, "swim_speed_up": 9, "ink_recovery_up": 6},
     "weapon_classes": {"splatling": 4.5}},
]


def write_set(tmp_path, data, name="set.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_custom_set_is_planted_and_labelled_honestly(tmp_path):
    path = write_set(tmp_path, CUSTOM)
    builds = generate_builds(6000, seed=5, concepts=path)
    concepts = load_concept_set(path)
    assert builds.concept_names == ("jumper", "saver", "three_way")
    assert builds.concepts.shape == (6000, 3) and builds.check_legal().all()
    rate = builds.concepts.mean(0)
    assert (rate > 0.05).all(), rate  # every concept is planted
    assert (concept_holds(builds.ap, concepts) | ~builds.concepts).all()
    for j, c in enumerate(CUSTOM):  # the requirement read from the file, not the objects
        rows = builds.concepts[:, j]
        for ability, ap in c["required"].items():
            assert (builds.ap[rows, ABILITY_INDEX[ability]] >= ap).all(), (c["name"], ability)
    # Same seed and set, same builds; the set's objects give the same as its file.
    again = generate_builds(6000, seed=5, concepts=concepts)
    np.testing.assert_array_equal(again.ap, builds.ap)
    np.testing.assert_array_equal(again.concepts, builds.concepts)
    assert world_for(concepts) is world_for(path)  # one world per set content
    # The favoured ability leans the filler: Swim Speed is likelier with "jumper".
    ssu = builds.ap[:, ABILITY_INDEX["swim_speed_up"]] > 0
    jumper, three_way = builds.concepts[:, 0], builds.concepts[:, 2]
    assert ssu[jumper & ~three_way].mean() > ssu[~jumper & ~three_way].mean()


def test_load_builds_plants_the_given_set_and_only_for_synthetic(tmp_path):
    path = write_set(tmp_path, CUSTOM)
    builds = load_builds("synthetic", num_builds=200, seed=2, concepts=str(path))
    assert builds.concept_names == ("jumper", "saver", "three_way")
    default = load_builds("synthetic", num_builds=200, seed=2)
    assert default.concept_names == tuple(c.name for c in CONCEPTS)
    with pytest.raises(ValueError, match="synthetic builds only"):
        load_builds("statink", path=str(path), concepts=str(path))


def test_example_file_loads_and_round_trips(tmp_path):
    concepts = load_concept_set(EXAMPLE)
    assert len(concepts) >= 3 and all(c.required for c in concepts)
    back = concepts_from_json(json.loads(json.dumps(concepts_to_json(concepts))))
    assert back == concepts and concept_set_digest(back) == concept_set_digest(concepts)
    assert recorded_digest(CONCEPTS) == "" and recorded_digest(concepts) != ""
    assert recorded_digest(concepts_from_json(concepts_to_json(CONCEPTS))) == ""
    # A directory records a set in concept_set.json and reads it back.
    write_concept_set(tmp_path, concepts)
    assert (tmp_path / CONCEPT_SET_FILE).exists()
    assert recorded_concept_set(tmp_path) == concepts
    assert recorded_concept_set(tmp_path / "nothing") is None


def _with(index, **changes):
    data = json.loads(json.dumps(CUSTOM))
    for k, v in changes.items():
        if v is None:
            data[index].pop(k, None)
        else:
            data[index][k] = v
    return data


BAD_SETS = [
    # (file content, what the message must name)
    ("[{", ["not valid JSON"]),
    ([], ["empty"]),
    ({"name": "x"}, ["list of concept objects"]),
    (["jumper"], ["concept 0", "expected an object"]),
    (_with(1, name=None), ["concept 1", "'name'", "missing"]),
    (_with(1, name=7), ["concept 1", "'name'", "string"]),
    (_with(1, required={"ink_saver_mian": 16}),
     ["'saver'", "'required'", "unknown ability 'ink_saver_mian'", "ink_saver_main"]),
    (_with(1, required={"ink_saver_main": 30}), ["'saver'", "'required'", "1..29", "30"]),
    (_with(1, required={"ink_saver_main": 0}), ["'saver'", "'required'", "1..29"]),
    (_with(1, required={"ink_saver_main": 6.5}), ["'saver'", "'required'", "whole number"]),
    (_with(1, required={"ink_saver_main": "16"}), ["'saver'", "'required'", "number"]),
    (_with(1, required={"ink_saver_main": True}), ["'saver'", "'required'", "number"]),
    (_with(1, required={"comeback": 6}), ["'saver'", "'required'", "'comeback'", "10"]),
    (_with(1, required={"comeback": 10, "last_ditch_effort": 10}),
     ["'saver'", "'required'", "'comeback'", "'last_ditch_effort'", "head"]),
    (_with(1, required={}), ["'saver'", "'required'", "empty"]),
    (_with(1, required=None), ["'saver'", "'required'", "missing"]),
    (_with(1, required=[["ink_saver_main", 16]]), ["'saver'", "'required'", "object"]),
    (_with(1, required={"ink_saver_main": 29, "run_speed_up": 29, "swim_speed_up": 3}),
     ["'saver'", "'required'", "does not fit"]),
    (_with(0, favoured={"swim_sped_up": 1}), ["'jumper'", "'favoured'", "'swim_sped_up'"]),
    (_with(1, required={"Ink Saver (Main)": 16, "ink_saver_main": 6}),
     ["'saver'", "'required'", "'Ink Saver (Main)' and 'ink_saver_main' both name "
                                 "'ink_saver_main'"]),
    (_with(0, favoured={"Swim Speed Up": 1, "SquidMove_Up": 2}),
     ["'jumper'", "'favoured'", "'Swim Speed Up' and 'SquidMove_Up' both name"]),
    (_with(0, favoured={"swim_speed_up": -1}), ["'jumper'", "'favoured'", ">= 0"]),
    (_with(0, weapon_classes={"bow": 2}), ["'jumper'", "'weapon_classes'", "'bow'"]),
    (_with(0, weapon_classes={"shooter": "high"}), ["'jumper'", "'weapon_classes'", "number"]),
    (_with(0, description=3), ["'jumper'", "'description'", "string"]),
    (_with(0, colour="red"), ["'jumper'", "'colour'", "unknown field"]),
    (CUSTOM + [dict(CUSTOM[0])], ["concept 3", "duplicate name 'jumper'", "concept 0"]),
]


@pytest.mark.parametrize("content,needles", BAD_SETS)
def test_bad_concept_files_name_file_concept_and_field(tmp_path, content, needles):
    path = write_set(tmp_path, content, "bad_set.json")
    with pytest.raises(ConceptSetError) as e:
        load_concept_set(path)
    message = str(e.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_abilities_may_be_named_as_the_game_names_them():
    data = json.loads(json.dumps(CUSTOM))
    data[0]["required"] = {"Stealth Jump": 10, "jumptime_save": 13}
    data[0]["favoured"] = {"SWIM SPEED UP": 2}
    data[1]["required"] = {"Ink Saver (Main)": 16, "Ink Saver (Sub)": 6}
    assert concepts_from_json(data, source="x") == concepts_from_json(CUSTOM, source="x")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_concept_set(tmp_path / "nope.json")


def test_primary_settings_record_the_set_only_when_custom(tmp_path):
    base = PrimaryTrainConfig(num_builds=100)
    assert "concepts_file" not in base.to_dict()  # runs recorded before sets still match
    cfg, concepts = base.with_concept_set()
    assert concepts == CONCEPTS and cfg.concept_set_sha256 == ""
    path = write_set(tmp_path, CUSTOM)
    cfg, concepts = dataclasses.replace(base, concepts_file=str(path)).with_concept_set()
    assert cfg.to_dict()["concept_set_sha256"] == concept_set_digest(concepts)
    assert cfg.to_dict()["concepts_file"] == str(path)
    with pytest.raises(ValueError, match="--concepts_file"):
        PrimaryTrainConfig(data_source="statink", data_path="x.csv", concepts_file=str(path))


def test_primary_run_records_its_set_and_refuses_a_changed_file(tmp_path):
    from primary.training import train_primary
    from runkit.resume import SettingsChanged

    path = write_set(tmp_path, CUSTOM)
    # The model and batch of test_primary_train's TINY run, so the compiled step is shared.
    cfg = PrimaryTrainConfig(
        embedding_dim=8, hidden_dim=16, num_layers=1, num_heads=2, num_inducing_points=4,
        lr=3e-3, batch_size=32, epochs=1, num_builds=60, seed=3, checkpoint_every=50,
        log_every=2, concepts_file=str(path))
    workdir = tmp_path / "run"
    train_primary(cfg, workdir)
    assert recorded_concept_set(workdir / "model") == load_concept_set(path)
    recorded = json.loads((workdir / "train_config.json").read_text())
    assert recorded["concept_set_sha256"] == concept_set_digest(load_concept_set(path))
    assert train_primary(cfg, workdir)["steps"] > 0  # unchanged: the finished run is reported
    changed = json.loads(path.read_text())
    changed[2]["required"]["run_speed_up"] = 15
    path.write_text(json.dumps(changed))
    with pytest.raises(SettingsChanged, match="concept_set_sha256"):
        train_primary(cfg, workdir)
