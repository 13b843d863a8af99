"""Export a trained or imported SAE in SAELens v6's on-disk format, and read such an export back.

    python -m bridge.export_saelens --workdir=DIR --out=OUT [--hook_name=pooled]
        [--activations=X.npy]

``DIR`` is an SAE run workdir or an import output (anything with ``DIR/sae``, an
SAE directory). A run trained on activation files (``sae_jax.train --activations``) has
no primary model, so its export needs ``--hook_name`` (where its activations were taken)
and records ``--model_name`` only when given. Writes ``OUT/cfg.json`` and
``OUT/sae_weights.safetensors``
holding float32 ``W_enc (d_in, d_sae)``, ``b_enc (d_sae,)``, ``W_dec (d_sae, d_in)``
and ``b_dec (d_in,)`` (plus ``threshold (d_sae,)`` for a jumprelu export). ``W_dec``
is written with unit-norm rows (our atoms as the forward pass uses them), because
SAELens applies ``W_dec`` as stored.

Architectures (SAELens computes ``pre = (x - b_dec) @ W_enc + b_enc`` with
``apply_b_dec_to_input`` true):

- relu_l1 -> ``standard``: ``relu(pre)``;
- topk -> ``topk`` with ``k``: the k largest of ``pre`` per row, ReLU'd;
- jumprelu -> ``jumprelu``: ``relu(pre) * (pre > threshold)`` with our per-feature
  thresholds; batchtopk and matryoshka -> ``jumprelu`` too, every feature's threshold
  the global inference one (this is how SAELens itself saves them).

Ours clips relu_l1 features at ``clip_max`` (6, as the original does; the other
architectures only when trained with ``--clip_all``); SAELens has no such clip, so the
export reproduces ours exactly only where features stay below it. The clip is recorded
in the metadata (``activation_clip_max``, null when none) and the export warns with the
measured share of active features at the clip: on ``activations`` when given, else the
run's evaluation (``metrics.json``'s ``clipped_fraction``). docs/training.md,
"Architectures", shows the one-line SAELens hook that restores the clip.

:func:`load_saelens_export` reads an export of ours back into a SparseAutoencoder.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from safetensors.numpy import load_file, save_file

from runkit.cli import report_user_errors, run_with_flagfiles
from runkit.errors import UserError
from runkit.jsonio import read_json, write_json
from runkit.run_dir import RunDir
from sae_jax.activation_files import open_activations
from sae_jax.architectures import ARCHITECTURES, get_architecture
from sae_jax.model import SAEConfig, SparseAutoencoder, encode, sae_from_params, unit_rows
from sae_jax.sae_dir import load_sae

SAELENS_VERSION = "6.0.0"  # the first release with this cfg.json layout
CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
DEFAULT_HOOK_NAME = "pooled"  # the input of the primary model's output layer
DEFAULT_MODEL_NAME = "splatnlp-set-completion"
# Exports written before ``sae_jax_architecture`` was recorded hold SAEConfig's default.
LEGACY_ARCHITECTURE = SAEConfig.architecture


class ClipWarning(UserWarning):
    """The exported SAE clips features that SAELens will not clip."""

def define_flags() -> None:
    """Flags are defined only when run as a program, so importing this module defines none."""
    flags.DEFINE_string("workdir", None, "SAE run workdir or import output (holds sae/); "
                        "required.")
    flags.DEFINE_string("out", None, "Output directory for cfg.json and the safetensors; "
                        "required.")
    flags.DEFINE_string("hook_name", None, "Hook point name to record (default: "
                        f"{DEFAULT_HOOK_NAME!r}, the primary's pooled vector; required for a "
                        "run trained on activation files).")
    flags.DEFINE_string("model_name", None, "Model name to record (default: "
                        f"{DEFAULT_MODEL_NAME!r}; none for a run trained on activation "
                        "files).")
    flags.DEFINE_string("activations", None, "SAE inputs (n, d_in) to measure the share of "
                        "features at the clip on: a .npy or .safetensors file or a folder of "
                        "shards (default: the run's evaluation, metrics.json).")
    flags.mark_flags_as_required(["workdir", "out"])


def saelens_tensors(sae: SparseAutoencoder) -> dict[str, np.ndarray]:
    """The SAELens tensors, float32 and contiguous (safetensors needs both)."""
    params = sae.params()
    out = {
        "W_enc": params["W_enc"],
        "b_enc": params["b_enc"],
        "W_dec": unit_rows(params["W_dec"]),
        "b_dec": params["b_dec"],
    }
    out.update(sae.config.arch.export_tensors(params, sae.hidden_dim))
    return {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in out.items()}


def saelens_config(sae: SparseAutoencoder, *, hook_name: str, model_name: str | None,
                   extra_metadata: dict | None = None) -> dict:
    """SAELens v6 ``cfg.json`` (architecture per the module docstring)."""
    config = sae.config
    metadata = {
        "sae_lens_version": SAELENS_VERSION,
        "sae_lens_training_version": SAELENS_VERSION,
        "hook_name": hook_name,
        "model_name": model_name,
        "model_class_name": "SetCompletionModel",
        "hook_head_index": None,
        "prepend_bos": False,
        # No SAELens counterpart: features above this value are clipped by our SAE.
        "activation_clip_max": config.encoder.clip_max,
        # Ours, so that load_saelens_export restores the SAE exactly.
        "sae_jax_architecture": config.architecture,
        "sae_jax_k": int(config.k),
        **(extra_metadata or {}),
    }
    cfg = {
        "architecture": config.arch.saelens_architecture,
        "d_in": int(config.input_dim),
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
    cfg.update(config.arch.export_fields(config))
    return cfg


def clipped_fraction(sae: SparseAutoencoder, activations) -> float:
    """Share of active features (``h > 0.01``) at the clip on ``activations (n, d_in)``."""
    x = np.asarray(activations, np.float32)
    if x.ndim != 2 or x.shape[1] != sae.config.input_dim or len(x) == 0:
        raise ValueError(f"activations have shape {x.shape}; the SAE reads rows of "
                         f"{sae.config.input_dim}")
    bad_rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad_rows.size:
        raise ValueError(f"activations hold non-finite values (NaN or inf) in {bad_rows.size:,} "
                         f"of {len(x):,} rows, the first at row {bad_rows[0]}; the share at the "
                         "clip cannot be measured on them")
    clip = sae.config.encoder.clip_max
    _, h = encode(sae.params(), jnp.asarray(x), sae.config.encoder)
    h = np.asarray(h)
    active = h > 0.01
    if clip is None or not active.any():
        return 0.0
    return float((active & (h >= clip)).sum() / active.sum())


def _warn_clip(sae: SparseAutoencoder, share: float | None, where: str) -> None:
    clip = sae.config.encoder.clip_max
    if clip is None:
        return
    measured = (f"{100 * share:.3g}% of active feature activations on {where} reach it"
                if share is not None else
                "the share of activations that reach it was not measured (pass activations)")
    warnings.warn(f"this {sae.config.architecture} SAE clips its features at {clip:g}, "
                  f"SAELens will not: {measured}; docs/training.md 'Architectures' shows "
                  "the SAELens hook that restores the clip", ClipWarning, stacklevel=3)


def export_saelens(sae: SparseAutoencoder, out: str | os.PathLike, *,
                   hook_name: str = DEFAULT_HOOK_NAME,
                   model_name: str | None = DEFAULT_MODEL_NAME,
                   extra_metadata: dict | None = None, activations=None,
                   clipped_share: float | None = None) -> Path:
    """Write ``out/cfg.json`` and ``out/sae_weights.safetensors``.

    An SAE that clips warns (:class:`ClipWarning`) with the share of active features at
    the clip, measured on ``activations (n, d_in)`` when given, else ``clipped_share``."""
    tensors = saelens_tensors(sae)
    broken = sorted(name for name, t in tensors.items() if not np.isfinite(t).all())
    if broken:
        raise ValueError(f"the SAE's {', '.join(broken)} hold non-finite values (NaN or inf); "
                         "refusing to export a broken SAE")
    where = "the run's evaluation builds"
    if activations is not None:
        clipped_share = clipped_fraction(sae, activations)
        where = f"the {len(activations)} given inputs"
    _warn_clip(sae, clipped_share, where)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_FILENAME))
    extra = dict(extra_metadata or {})
    if sae.config.encoder.clip_max is not None:
        extra["clipped_fraction"] = clipped_share
    cfg = saelens_config(sae, hook_name=hook_name, model_name=model_name,
                         extra_metadata=extra)
    write_json(out / CFG_FILENAME, cfg)
    return out


def export_workdir(workdir: str | os.PathLike, out: str | os.PathLike, *,
                   hook_name: str | None = None, model_name: str | None = None,
                   activations=None) -> Path:
    """Export ``workdir/sae``; ``workdir/run.json`` (if present) names the primary model,
    or the activation files the run trained on, ``workdir/metrics.json`` (if present) gives
    the clip share when ``activations`` is None. ``hook_name``, ``model_name``: None takes
    the primary's (:data:`DEFAULT_HOOK_NAME`, :data:`DEFAULT_MODEL_NAME`); a run on
    activation files must be given ``hook_name`` and records no model unless given one."""
    run = RunDir(workdir)
    if not run.sae_dir.is_dir():
        raise FileNotFoundError(f"{run.root} holds no sae/ directory: give an SAE run workdir "
                                "or the output of bridge.import_splatnlp with an SAE")
    record = run.read_run() if run.is_run() else None
    extra = {"exported_from": str(run.root)}
    if record is not None and record.on_activations:
        if not hook_name:
            raise UserError(f"{run.root} trained on the activations in {record.data_path}, "
                            "not on the primary model: give --hook_name, the hook point "
                            "they were taken at")
        extra.update(activations=str(run.resolve(record.data_path)),
                     activations_sha256=record.extra.get("activations_sha256"),
                     model_class_name=None)
    else:
        model_name = model_name or DEFAULT_MODEL_NAME
    sae = load_sae(run.sae_dir)
    hook_name = hook_name or DEFAULT_HOOK_NAME
    if record is not None and not record.on_activations:
        # where the primary model is now (run.json may record it relative)
        extra["primary_model_dir"] = str(run.resolve(record.primary_model_dir))
    share = None
    if activations is None:
        share = run.metrics().get("clipped_fraction")
    return export_saelens(sae, out, hook_name=hook_name, model_name=model_name,
                          extra_metadata=extra, activations=activations, clipped_share=share)


def load_saelens_export(directory: str | os.PathLike) -> SparseAutoencoder:
    """An SAE from an export of ours (``cfg.json`` + safetensors), every architecture."""
    d = Path(directory)
    cfg = read_json(d / CFG_FILENAME, what="SAELens cfg.json")
    meta = cfg.get("metadata", {})
    arch = meta.get("sae_jax_architecture")
    if arch is None:  # written before other architectures were exported: standard, clipped
        legacy = get_architecture(LEGACY_ARCHITECTURE)
        arch = legacy.name if cfg.get("architecture") == legacy.saelens_architecture else None
    if (arch not in ARCHITECTURES
            or get_architecture(arch).saelens_architecture != cfg.get("architecture")):
        raise UserError(f"{d / CFG_FILENAME}: architecture {cfg.get('architecture')!r} "
                        f"(ours: {arch!r}) is not one this tool exports")
    t = load_file(str(d / WEIGHTS_FILENAME))
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    clip = meta.get("activation_clip_max")
    config = SAEConfig(d_in, d_sae / d_in, 6.0 if clip is None else float(clip), arch,
                       int(meta.get("sae_jax_k", cfg.get("k", 0))), clip=clip is not None)
    params = {k: jnp.asarray(t[k]) for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    try:
        params.update(config.arch.import_params(t))
    except ValueError as e:
        raise UserError(f"{d}: {e}") from None
    return sae_from_params(config, params)


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
    activations = None
    if f.activations:
        files = open_activations(f.activations)
        files.check_finite()
        activations = files.read_range(0, files.num_rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ClipWarning)
        out = export_workdir(f.workdir, f.out, hook_name=f.hook_name, model_name=f.model_name,
                             activations=activations)
    for w in caught:
        print(f"warning: {w.message}")
    cfg = read_json(out / CFG_FILENAME, what="SAELens cfg.json")
    print(f"wrote {out.absolute()}: SAELens {cfg['architecture']} SAE (ours: "
          f"{cfg['metadata']['sae_jax_architecture']}), d_in {cfg['d_in']}, "
          f"d_sae {cfg['d_sae']}, hook {cfg['hook_name']!r}")
    return 0


if __name__ == "__main__":
    define_flags()
    run_with_flagfiles(main)
