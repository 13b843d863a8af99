"""Export a trained or imported SAE in SAELens v6's on-disk format ("standard" architecture).

    python -m bridge.export_saelens --workdir=DIR --out=OUT [--hook_name=pooled]

``DIR`` is an SAE run workdir or an import output (anything with ``DIR/sae``, an
SAE directory). Writes ``OUT/cfg.json`` and ``OUT/sae_weights.safetensors``
holding float32 ``W_enc (d_in, d_sae)``, ``b_enc (d_sae,)``, ``W_dec (d_sae, d_in)``
and ``b_dec (d_in,)``. ``W_dec`` is written with unit-norm rows (our atoms as
the forward pass uses them), because SAELens applies ``W_dec`` as stored.

SAELens's standard SAE computes ``relu((x - b_dec) @ W_enc + b_enc) @ W_dec + b_dec``
(with ``apply_b_dec_to_input`` true). Ours clips the features at ``clip_max``
(6, as the original does); SAELens has no such clip, so the exported SAE
reproduces ours exactly only on inputs whose feature activations stay below
``clip_max``. The clip value is recorded in the metadata
(``activation_clip_max``) so a reader can apply it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from absl import app, flags, logging
from safetensors.numpy import save_file

from runkit.cli import report_user_errors
from runkit.jsonio import write_json
from sae_jax.model import SparseAutoencoder, unit_rows
from sae_jax.store import load_sae

SAELENS_VERSION = "6.0.0"  # the first release with this cfg.json layout
CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
DEFAULT_HOOK_NAME = "pooled"  # the input of the primary model's output layer
DEFAULT_MODEL_NAME = "splatnlp-set-completion"



def define_flags() -> None:
    """Flags are defined only when run as a program, so importing this module defines none."""
    flags.DEFINE_string("workdir", None, "SAE run workdir or import output (holds sae/).")
    flags.DEFINE_string("out", None, "Output directory for cfg.json and the safetensors.")
    flags.DEFINE_string("hook_name", DEFAULT_HOOK_NAME, "Hook point name to record.")
    flags.DEFINE_string("model_name", DEFAULT_MODEL_NAME, "Model name to record.")
    flags.mark_flags_as_required(["workdir", "out"])


def saelens_tensors(sae: SparseAutoencoder) -> dict[str, np.ndarray]:
    """The four SAELens tensors, float32 and contiguous (safetensors needs both)."""
    params = sae.params()
    out = {
        "W_enc": params["W_enc"],
        "b_enc": params["b_enc"],
        "W_dec": unit_rows(params["W_dec"]),
        "b_dec": params["b_dec"],
    }
    return {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in out.items()}


def saelens_config(sae: SparseAutoencoder, *, hook_name: str, model_name: str,
                   extra_metadata: dict | None = None) -> dict:
    """SAELens v6 ``cfg.json`` for a standard (ReLU) SAE."""
    metadata = {
        "sae_lens_version": SAELENS_VERSION,
        "sae_lens_training_version": SAELENS_VERSION,
        "hook_name": hook_name,
        "model_name": model_name,
        "model_class_name": "SetCompletionModel",
        "hook_head_index": None,
        "prepend_bos": False,
        # No SAELens counterpart: features above this value are clipped by our SAE.
        "activation_clip_max": float(sae.config.clip_max),
        **(extra_metadata or {}),
    }
    return {
        "architecture": "standard",
        "d_in": int(sae.config.input_dim),
        "d_sae": int(sae.hidden_dim),
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "hook_name": hook_name,
        "model_name": model_name,
        "metadata": metadata,
    }


def export_saelens(sae: SparseAutoencoder, out: str | os.PathLike, *,
                   hook_name: str = DEFAULT_HOOK_NAME, model_name: str = DEFAULT_MODEL_NAME,
                   extra_metadata: dict | None = None) -> Path:
    """Write ``out/cfg.json`` and ``out/sae_weights.safetensors``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(saelens_tensors(sae), str(out / WEIGHTS_FILENAME))
    cfg = saelens_config(sae, hook_name=hook_name, model_name=model_name,
                         extra_metadata=extra_metadata)
    write_json(out / CFG_FILENAME, cfg)
    return out


def export_workdir(workdir: str | os.PathLike, out: str | os.PathLike, *,
                   hook_name: str = DEFAULT_HOOK_NAME,
                   model_name: str = DEFAULT_MODEL_NAME) -> Path:
    """Export ``workdir/sae``; ``workdir/run.json`` (if present) names the primary model."""
    workdir = Path(workdir)
    if not (workdir / "sae").is_dir():
        raise FileNotFoundError(f"{workdir} holds no sae/ directory: give an SAE run workdir "
                                "or the output of bridge.import_splatnlp with an SAE")
    sae = load_sae(workdir / "sae")
    extra = {"exported_from": str(workdir.absolute())}
    run_json = workdir / "run.json"
    if run_json.is_file():
        with open(run_json) as f:
            extra["primary_model_dir"] = json.load(f).get("primary_model_dir")
    return export_saelens(sae, out, hook_name=hook_name, model_name=model_name,
                          extra_metadata=extra)


@report_user_errors
def main(argv):
    """``python -m bridge.export_saelens``; a bad --workdir prints one ``error:`` line, and
    ``--out`` is created only once the SAE has been read."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every read step at INFO
    f = flags.FLAGS
    if not Path(f.workdir).is_dir():
        raise FileNotFoundError(f"--workdir {f.workdir} is not a directory")
    if Path(f.out).exists() and not Path(f.out).is_dir():
        raise FileExistsError(f"--out {f.out} exists and is not a directory")
    out = export_workdir(f.workdir, f.out, hook_name=f.hook_name, model_name=f.model_name)
    with open(out / CFG_FILENAME) as fh:
        cfg = json.load(fh)
    print(f"wrote {out.absolute()}: SAELens standard SAE, d_in {cfg['d_in']}, "
          f"d_sae {cfg['d_sae']}, hook {cfg['hook_name']!r} (features clipped at "
          f"{cfg['metadata']['activation_clip_max']} in our SAE, not in SAELens)")
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
