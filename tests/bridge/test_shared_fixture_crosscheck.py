"""Parity with the shared SplatNLP fixture, where a checkout has one beside the repository.

``shared/fixtures/splatnlp_small`` (next to the repository's folder) is a run directory made
by an independent PyTorch implementation of the original; its ``cases.npz`` holds that
implementation's outputs. This imports it with the torch-free importer and checks ours
against them with the metric and tolerance of ``test_splatnlp_import.py``:
max |ours - theirs| / max |theirs| over the whole array, < 1e-5. Skipped where the folder
is absent (a plain clone); the repository's own fixture covers the same checks there.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

SHARED_FIXTURE = (Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
                  / "splatnlp_small")
TOLERANCE = 1e-5

if not (SHARED_FIXTURE / "cases.npz").is_file():
    pytest.skip(f"shared fixture not found: {SHARED_FIXTURE}", allow_module_level=True)

from bridge.splatnlp import load_splatnlp  # noqa: E402
from bridge.steering import HookMode, hooked_forward  # noqa: E402
from primary.model import PrimaryConfig  # noqa: E402
from primary.vocab import Vocab, WeaponVocab  # noqa: E402
from tests.fixture_paths import rel_err  # noqa: E402


@pytest.fixture(scope="module")
def cases():
    return dict(np.load(SHARED_FIXTURE / "cases.npz"))


@pytest.fixture(scope="module")
def run():
    return load_splatnlp(SHARED_FIXTURE, SHARED_FIXTURE / "sae.pth")


@pytest.fixture(scope="module")
def ours(run, cases):
    tokens, weapons, mask = (jnp.asarray(cases[k])
                             for k in ("tokens", "weapons", "key_padding_mask"))
    feature, value = int(cases["edit_feature"]), float(cases["edit_value"])
    recon = hooked_forward(run.primary, run.sae, tokens, weapons, mask, HookMode.RECON)
    edit = hooked_forward(run.primary, run.sae, tokens, weapons, mask, HookMode.EDIT,
                          feature=feature, value=value)
    zero = hooked_forward(run.primary, run.sae, tokens, weapons, mask, HookMode.EDIT,
                          feature=feature, value=0.0)
    return {
        "pooled": edit.pooled,
        "logits": run.primary.head(edit.pooled),
        "sae_pre": edit.sae_pre,
        "sae_post": edit.sae_post,
        "sae_recon": run.sae(edit.pooled)[0],
        "recon_logits": recon.logits,
        "edit_logits": edit.logits,
        "zero_logits": zero.logits,
    }


@pytest.mark.parametrize("name", ["pooled", "logits", "sae_pre", "sae_post", "sae_recon",
                                  "recon_logits", "edit_logits", "zero_logits"])
def test_parity_with_shared_fixture(ours, cases, name):
    assert ours[name].shape == cases[name].shape
    assert rel_err(ours[name], cases[name]) < TOLERANCE, name


def test_shared_run_directory_reads(run):
    assert run.config == PrimaryConfig.from_json(SHARED_FIXTURE / "model_params.json")
    vocab = Vocab.load(SHARED_FIXTURE / "vocab.json")
    weapons = WeaponVocab.load(SHARED_FIXTURE / "weapon_vocab.json")
    assert len(vocab) == run.config.vocab_size and vocab.pad_id == run.config.pad_token_id
    assert len(weapons) == run.config.weapon_vocab_size
