"""Config fields as flags: the help sentence is declared with the field, and a field
without one is refused."""

import dataclasses

import pytest
from absl import flags

from primary.training import PrimaryTrainConfig
from runkit.flags import config_from_flags, define_config_flags, setting
from sae_jax.config import SAETrainConfig


@dataclasses.dataclass(frozen=True)
class Small:
    rate: float = setting(0.5, "How fast it goes.")
    steps: tuple[int, ...] = setting((1, 2), "Comma-separated steps.")
    name: str = setting("x", "What it is called.")
    internal: str = ""


def test_flags_carry_the_help_and_default_declared_with_the_field():
    values = flags.FlagValues()
    define_config_flags(Small, skip=("internal",), flag_values=values,
                        help_overrides={"name": "Its name here."})
    assert values["rate"].help == "How fast it goes." and values["rate"].default == 0.5
    assert values["steps"].help == "Comma-separated steps."
    assert values["steps"].default == ["1", "2"]
    assert values["name"].help == "Its name here."
    assert "internal" not in values
    values(["prog", "--rate=2", "--steps=4,5"])
    assert config_from_flags(Small, values, skip=("internal",)) == Small(2.0, (4, 5), "x")


def test_a_field_without_help_is_refused_by_name_and_no_flag_is_defined():
    values = flags.FlagValues()
    with pytest.raises(TypeError, match=r"Small\.internal has no help sentence"):
        define_config_flags(Small, flag_values=values)
    assert not list(values)


def test_a_setting_needs_a_sentence():
    with pytest.raises(ValueError, match="help sentence"):
        setting(1, "  ")


@pytest.mark.parametrize("cls, internal", [
    (SAETrainConfig, {"extra", "concept_set_sha256"}),
    (PrimaryTrainConfig, {"concept_set_sha256"}),
])
def test_every_flag_field_of_the_training_configs_has_its_help(cls, internal):
    """Only the fields the run fills in itself are not flags."""
    no_help = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("help")}
    assert no_help == internal
    define_config_flags(cls, skip=tuple(internal), flag_values=flags.FlagValues())
