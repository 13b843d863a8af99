"""A rerun with other settings is refused with the differences; --override records them."""

import json

import pytest

from runkit.resume import CHANGES_NAME, CONFIG_NAME, SettingsChanged, claim_config, claim_settings


def test_first_claim_records_and_equal_settings_pass(tmp_path):
    assert claim_settings(tmp_path, {"lr": 0.1, "steps": (1, 2)}) == {}
    assert json.loads((tmp_path / CONFIG_NAME).read_text()) == {"lr": 0.1, "steps": [1, 2]}
    assert claim_settings(tmp_path, {"lr": 0.1, "steps": (1, 2)}) == {}  # tuple == stored list


def test_changed_settings_are_refused_naming_each_difference(tmp_path):
    claim_settings(tmp_path, {"lr": 0.1, "epochs": 2})
    with pytest.raises(SettingsChanged, match=r"epochs: 2 -> 3; lr: 0.1 -> 0.2.*--override"):
        claim_settings(tmp_path, {"lr": 0.2, "epochs": 3})
    assert json.loads((tmp_path / CONFIG_NAME).read_text()) == {"lr": 0.1, "epochs": 2}
    assert not (tmp_path / CHANGES_NAME).exists()


def test_override_keeps_the_started_settings_and_records_the_change(tmp_path):
    claim_settings(tmp_path, {"lr": 0.1, "epochs": 2})
    assert claim_settings(tmp_path, {"lr": 0.1, "epochs": 3}, override=True) == {
        "epochs": (2, 3)}
    assert json.loads((tmp_path / CONFIG_NAME).read_text()) == {"lr": 0.1, "epochs": 2}
    change = json.loads((tmp_path / CHANGES_NAME).read_text())
    assert change["changes"] == {"epochs": {"was": 2, "now": 3}}
    # The run now goes on under epochs 3: the same settings need no override again.
    assert claim_settings(tmp_path, {"lr": 0.1, "epochs": 3}) == {}
    with pytest.raises(SettingsChanged, match="epochs: 3 -> 2"):
        claim_settings(tmp_path, {"lr": 0.1, "epochs": 2})


def test_non_writer_checks_but_writes_nothing(tmp_path):
    assert claim_settings(tmp_path, {"a": 1}, write=False) == {}
    assert not (tmp_path / CONFIG_NAME).exists()


def test_a_setting_added_since_the_run_started_counts_as_its_default(tmp_path):
    from sae_jax.config import SAETrainConfig

    recorded = SAETrainConfig().to_dict()
    del recorded["decoder_init_norm"]  # a run started before the setting existed
    (tmp_path / CONFIG_NAME).write_text(json.dumps(recorded))
    assert claim_config(tmp_path, SAETrainConfig(), write=False) == {}
    with pytest.raises(SettingsChanged, match=r"decoder_init_norm: 0\.0 -> 0\.1"):
        claim_config(tmp_path, SAETrainConfig(decoder_init_norm=0.1), write=False)
    # Without the defaults the same record reads as a change.
    with pytest.raises(SettingsChanged, match=r"decoder_init_norm: None -> 0\.0"):
        claim_settings(tmp_path, SAETrainConfig().to_dict(), write=False)
