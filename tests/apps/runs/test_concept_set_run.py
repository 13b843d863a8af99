"""An SAE run on a custom concept set: its primary, data, evaluation builds, concept recovery
and resume policy all use the set the run planted."""

import dataclasses
import json
import shutil

import pytest

from apps.analysis.pipeline import analyze, evaluation_builds
from apps.runs.setup import demo_primary_config, run_concept_set, run_concepts
from apps.training.single_run import train_sae
from primary.concept_sets import concept_set_digest, load_concept_set, write_concept_set
from primary.model_dir import load_primary, save_primary
from primary.planted_concepts import CONCEPTS
from primary.sources import default_vocabs, load_builds
from primary.training import PrimaryTrainConfig
from runkit.resume import SettingsChanged
from sae_jax.config import SAETrainConfig
from tests.tiny_setup import primary_for

SET = [
    {"name": "jumper", "required": {"stealth_jump": 10, "quick_super_jump": 13}},
    {"name": "saver", "required": {"ink_saver_main": 16, "ink_saver_sub": 6},
     "favoured": {"ink_recovery_up": 2}},
    {"name": "runner", "required": {"run_speed_up": 12, "swim_speed_up": 9},
     "weapon_classes": {"splatling": 4}},
]
NAMES = ["jumper", "saver", "runner"]
# 60 builds: 27 SAE steps over 2 epochs (as in test_sae_train), then the analysis.
CFG = SAETrainConfig(
    expansion_factor=2.0, lr=3e-3, l1_coeff=1e-3, l1_warmup_steps=10, usage_warmup_steps=10,
    usage_period=100, buffer_size=128, min_buffer=64, primary_batch_size=16, sae_batch_size=32,
    sae_steps_per_primary_step=1, epochs=2, data_fraction=1.0, resample_steps=(15,),
    num_builds=60, seed=0, log_every=5, checkpoint_every=10, eval_builds=20,
)
PRIMARY = PrimaryTrainConfig(embedding_dim=8, hidden_dim=16, num_layers=1, num_heads=2,
                             num_inducing_points=4, batch_size=16, epochs=1, lr=1e-3,
                             log_every=5, checkpoint_every=100)


def finished_primary_on(cfg, workdir):
    """Lay out ``workdir/primary_run`` as the finished demo primary of ``cfg`` (an untrained
    tiny model; training it is primary.training's business, tested there). train_sae reuses
    it only if the settings it derives for its primary, concept file and digest included,
    are these."""
    run = workdir / "primary_run"
    run.mkdir(parents=True)
    pcfg, concepts = demo_primary_config(cfg, PRIMARY).with_concept_set()
    (run / "train_config.json").write_text(json.dumps(pcfg.to_dict()))
    (run / "metrics.json").write_text("{}")
    builds = load_builds("synthetic", num_builds=cfg.num_builds, seed=cfg.seed,
                         concepts=concepts)
    vocab, weapon_vocab = default_vocabs(builds)
    save_primary(run / "model", primary_for(vocab, weapon_vocab), vocab, weapon_vocab,
                 concepts=concepts)


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory):
    """An SAE run with its own demo primary, --concepts_file passed through to it."""
    root = tmp_path_factory.mktemp("custom_set")
    path = root / "my_concepts.json"
    path.write_text(json.dumps(SET))
    cfg = dataclasses.replace(CFG, concepts_file=str(path))
    workdir = root / "run"
    finished_primary_on(cfg, workdir)
    train_sae(cfg, workdir, primary_flagfile_cfg=PRIMARY, analyze=False)
    analyze(workdir, top_features=3)  # what analyze=True runs, with fewer feature pages
    return workdir, cfg, path


def test_the_run_plants_and_recovers_its_own_concepts(custom_run):
    workdir, cfg, path = custom_run
    planted = load_concept_set(path)
    digest = concept_set_digest(planted)
    # The primary trained on the set and recorded it; so did the SAE run.
    assert load_concept_set(workdir / "primary_run" / "model" / "concept_set.json") == planted
    assert load_concept_set(workdir / "concept_set.json") == planted
    primary_settings = json.loads((workdir / "primary_run" / "train_config.json").read_text())
    assert primary_settings["concepts_file"] == str(path)
    assert primary_settings["concept_set_sha256"] == digest
    sae_settings = json.loads((workdir / "train_config.json").read_text())
    assert sae_settings["concept_set_sha256"] == digest
    assert run_concepts(workdir) == planted
    assert run_concepts(workdir / "primary_run") == planted
    # Evaluation builds and concept recovery are over the set's concepts, not the built-in.
    _, vocab, weapon_vocab = load_primary(workdir / "primary_run" / "model")
    builds = evaluation_builds(workdir, vocab, weapon_vocab)
    assert list(builds.concept_names) == NAMES and builds.concepts.any(0).all()
    recovery = json.loads((workdir / "concepts.json").read_text())
    assert [r["concept"] for r in recovery["rows"]] == NAMES
    assert recovery["summary"]["total"] == len(NAMES)
    # The explanations' ground-truth check is against the planted set too.
    truth = json.loads((workdir / "explanations.json").read_text())["summary"]["ground_truth"]
    recovered = [r["concept"] for r in recovery["rows"] if r["sae_f1"] >= 0.8]
    assert [c["concept"] for c in (truth or {}).get("concepts", [])] == recovered


def test_a_changed_concept_file_is_caught_on_resume(custom_run):
    workdir, cfg, path = custom_run
    original = path.read_text()
    changed = json.loads(original)
    changed[0]["required"]["quick_super_jump"] = 16
    try:
        path.write_text(json.dumps(changed))
        with pytest.raises(SettingsChanged, match="concept_set_sha256"):
            train_sae(cfg, workdir, primary_flagfile_cfg=PRIMARY, analyze=False)
    finally:
        path.write_text(original)
    # The built-in set instead of the file: refused as well.
    with pytest.raises(SettingsChanged, match="concepts_file"):
        train_sae(CFG, workdir, primary_flagfile_cfg=PRIMARY, analyze=False)


def test_a_reused_primary_decides_the_set(custom_run, tmp_path):
    workdir, cfg, path = custom_run
    model_dir = workdir / "primary_run" / "model"
    planted = load_concept_set(path)
    # No --concepts_file: the primary's recorded set.
    resolved, concepts = run_concept_set(CFG, model_dir)
    assert concepts == planted and resolved.concept_set_sha256 == concept_set_digest(planted)
    # The same set named again is fine; another set is refused, naming both.
    assert run_concept_set(cfg, model_dir)[1] == planted
    other = tmp_path / "other.json"
    write_concept_set(tmp_path, CONCEPTS[:2])
    shutil.copy(tmp_path / "concept_set.json", other)
    with pytest.raises(ValueError, match="other.json.*trained on a custom set of 3 concepts"):
        run_concept_set(dataclasses.replace(CFG, concepts_file=str(other)), model_dir)
    # A primary that recorded no set (imported, or older) takes the file's set.
    bare = tmp_path / "bare_model"
    shutil.copytree(model_dir, bare)
    (bare / "concept_set.json").unlink()
    assert run_concept_set(dataclasses.replace(CFG, concepts_file=str(other)), bare)[1] == \
        CONCEPTS[:2]
    assert run_concept_set(CFG, bare)[1] == CONCEPTS
