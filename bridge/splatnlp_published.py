"""What SplatNLP publishes, and how its side files describe the models.

SplatNLP publishes its artifacts under one base address (:data:`DEFAULT_BASE_URL`), with
the file names its own downloader uses (:data:`BASE_FILES` ... :data:`DATA_FILES`). Besides
the checkpoints, three side files matter for an import:

- ``model_params.json`` holds the constructor arguments of ``model.pth``. SplatNLP's own
  demo builds the Ultra model (``model_ultra.pth``) from the same file; the published
  ``model_info.json`` is not documented. :func:`ultra_model_params` therefore looks for
  Ultra hyperparameters in ``model_info.json`` (an object under a key naming ``ultra``)
  and in ``sae_config_ultra.json`` (SplatNLP's SAE training records the primary model's
  shape as ``primary_*`` settings), uses the first it finds, else ``model_params.json``,
  and says which. The checkpoint's tensor shapes then confirm every size (the import's
  coverage and shape check); ``num_heads`` is the one setting no shape shows.
- ``sae_config_ultra.json`` holds the SAE's settings; :func:`apply_sae_config` checks its
  input dim and expansion factor against the SAE checkpoint's shape and takes its clip.
- ``consolidated_ultra.json`` holds labels in SplatNLP's dashboard schema
  (``display_name``/``dashboard_name``, ``dashboard_category``, ``dashboard_notes``);
  :func:`consolidated_to_labels` turns it into the label store's format.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from bridge.splatnlp import CheckpointMismatchError
from primary.model import PrimaryConfig
from runkit.jsonio import parse_json_file
from sae_jax.feature_labels import CATEGORIES
from sae_jax.model import SparseAutoencoder, sae_from_params

DEFAULT_BASE_URL = "https://splat-nlp.nyc3.cdn.digitaloceanspaces.com/dataset_v2/"


@dataclass(frozen=True)
class Artifact:
    """One published file; an ``optional`` one may be absent (HTTP 404) without error."""

    name: str
    optional: bool = False


BASE_FILES = tuple(map(Artifact, ("model.pth", "model_params.json", "vocab.json",
                                  "weapon_vocab.json", "model_info.json")))
ULTRA_FILES = (Artifact("model_ultra.pth"),)
SAE_FILES = (Artifact("sae_config_ultra.json"), Artifact("sae_model_ultra.pth"))
LABEL_FILES = (Artifact("feature_labels_ultra.json"),
               Artifact("consolidated_ultra.json", optional=True))
DATA_FILES = (Artifact("tokenized_data.csv"),)


@dataclass(frozen=True)
class Selection:
    """Which groups to fetch; labels need the SAE (they name its features) and the SAE needs
    the Ultra model (it was trained on it), so each implies the one it needs."""

    ultra: bool = False
    sae: bool = False
    labels: bool = False
    data: bool = False

    def __post_init__(self):
        object.__setattr__(self, "sae", self.sae or self.labels)
        object.__setattr__(self, "ultra", self.ultra or self.sae)

    def artifacts(self) -> list[Artifact]:
        out = list(BASE_FILES)
        for wanted, files in ((self.ultra, ULTRA_FILES), (self.sae, SAE_FILES),
                              (self.labels, LABEL_FILES), (self.data, DATA_FILES)):
            if wanted:
                out += files
        return out


def artifact_url(base_url: str, name: str) -> str:
    return base_url.rstrip("/") + "/" + name


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON file that must hold an object; anything else is an error naming the file."""
    raw = parse_json_file(path, what="JSON file")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


# Settings that shape the model (the vocabulary sizes come with vocab.json either way).
ARCHITECTURE_KEYS = ("embedding_dim", "hidden_dim", "num_layers", "num_heads",
                     "num_inducing_points", "use_layer_norm")
# SplatNLP's SAE training records the primary model it hooked under these names.
SAE_CONFIG_PRIMARY_KEYS = {
    "primary_embedding_dim": "embedding_dim", "primary_hidden_dim": "hidden_dim",
    "primary_num_layers": "num_layers", "primary_num_heads": "num_heads",
    "primary_num_inducing": "num_inducing_points", "primary_use_layernorm": "use_layer_norm",
}
_PARAM_NAMES = {f.name for f in dataclasses.fields(PrimaryConfig)}


def _ultra_entry(model_info: dict) -> tuple[str, dict] | None:
    """``(key path, params)`` of an object under a key naming ``ultra`` that holds
    architecture settings (directly or under ``model_params`` / ``params`` /
    ``hyperparameters``)."""
    for key, value in model_info.items():
        if "ultra" not in str(key).lower() or not isinstance(value, dict):
            continue
        for sub in ("model_params", "params", "hyperparameters"):
            if isinstance(value.get(sub), dict) and set(value[sub]) & set(ARCHITECTURE_KEYS):
                return f"{key}.{sub}", value[sub]
        if set(value) & set(ARCHITECTURE_KEYS):
            return str(key), value
    return None


def ultra_model_params(run_dir: str | os.PathLike, sae_config: dict | None = None
                       ) -> tuple[dict, str, list[str]]:
    """``(constructor arguments, where they came from, findings)`` for ``model_ultra.pth``
    (see the module docstring). ``findings``: one line per fact found, for the summary."""
    run_dir = Path(run_dir)
    params = read_json_object(run_dir / "model_params.json")
    findings = []
    info_path = run_dir / "model_info.json"
    model_info = read_json_object(info_path) if info_path.is_file() else None
    source = "model_params.json (as SplatNLP's own demo builds the Ultra model)"
    ultra = None
    if model_info is None:
        findings.append("model_info.json: not present")
    else:
        ultra = _ultra_entry(model_info)
        top = {k: model_info[k] for k in ARCHITECTURE_KEYS if k in model_info}
        if ultra is not None:
            findings.append(f"model_info.json: Ultra hyperparameters under {ultra[0]!r}: "
                            + ", ".join(f"{k}={ultra[1][k]}" for k in ARCHITECTURE_KEYS
                                        if k in ultra[1]))
        else:
            findings.append("model_info.json: no Ultra hyperparameters (keys: "
                            f"{', '.join(map(str, list(model_info)[:12])) or 'none'})")
        if top:
            differs = {k: (v, params.get(k)) for k, v in top.items() if params.get(k) != v}
            findings.append("model_info.json: top-level settings "
                            + ("agree with model_params.json" if not differs else
                               "differ from model_params.json (model.pth): "
                               + ", ".join(f"{k} {a} vs {b}" for k, (a, b) in differs.items())))
    recorded = {ours: sae_config[theirs] for theirs, ours in SAE_CONFIG_PRIMARY_KEYS.items()
                if sae_config and theirs in sae_config}
    if ultra is not None:
        params = {**params, **{k: v for k, v in ultra[1].items() if k in _PARAM_NAMES}}
        source = f"model_info.json {ultra[0]!r} over model_params.json"
    elif recorded:
        differs = {k: v for k, v in recorded.items() if params.get(k) != v}
        if differs:
            params = {**params, **differs}
            source = ("sae_config_ultra.json's primary_* settings over model_params.json ("
                      + ", ".join(f"{k}={v}" for k, v in differs.items()) + ")")
    if recorded:
        differs = {k: (v, params.get(k)) for k, v in recorded.items() if params.get(k) != v}
        findings.append("sae_config_ultra.json: the SAE's primary_* settings "
                        + ("agree with the Ultra parameters used" if not differs else
                           "differ from the Ultra parameters used: "
                           + ", ".join(f"{k} {a} vs {b}" for k, (a, b) in differs.items())))
    findings.append(f"Ultra model parameters from {source}; the checkpoint's tensor shapes "
                    f"confirm every size (num_heads={params.get('num_heads')} is not visible "
                    "in any shape)")
    return params, source, findings


def _number(cfg: dict, key: str, source: str, *, integer: bool) -> float | int | None:
    if key not in cfg:
        return None
    value = cfg[key]
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{source}: {key} must be {kind}, got {json.dumps(value)}")
    return value


INPUT_DIM_KEYS = ("input_dim", "sae_input_dim", "primary_hidden_dim")
CLIP_KEYS = ("clip_max", "clamp_max")


def apply_sae_config(sae: SparseAutoencoder, cfg: dict, *, source: str, checkpoint: str
                     ) -> tuple[SparseAutoencoder, list[str]]:
    """Check ``sae_config_ultra.json`` against the SAE read from ``checkpoint``: every input
    dim it names (``input_dim``, ``sae_input_dim``, ``primary_hidden_dim``), its
    ``expansion_factor`` and ``sae_hidden_dim`` must match the checkpoint's shape. A clip
    (``clip_max`` / ``clamp_max``) replaces the original's built-in 6. Returns the SAE (with
    that clip) and one finding line per check."""
    d_in, d_sae = sae.config.input_dim, sae.config.hidden_dim
    shape = f"{checkpoint} encoder.weight shape ({d_sae}, {d_in})"
    findings = []
    for key in INPUT_DIM_KEYS:
        value = _number(cfg, key, source, integer=True)
        if value is not None and value != d_in:
            raise CheckpointMismatchError(f"{source}: {key} {value} does not match the SAE "
                                          f"input dim {d_in} of {shape}")
    expansion = _number(cfg, "expansion_factor", source, integer=False)
    if expansion is not None and int(d_in * expansion) != d_sae:
        raise CheckpointMismatchError(
            f"{source}: expansion_factor {expansion} x input dim {d_in} = "
            f"{int(d_in * expansion)} features, but {shape} holds {d_sae}")
    hidden = _number(cfg, "sae_hidden_dim", source, integer=True)
    if hidden is not None and hidden != d_sae:
        raise CheckpointMismatchError(f"{source}: sae_hidden_dim {hidden} does not match the "
                                      f"{d_sae} features of {shape}")
    named = [k for k in (*INPUT_DIM_KEYS, "expansion_factor", "sae_hidden_dim") if k in cfg]
    findings.append(f"{Path(source).name}: " + (
        ", ".join(f"{k}={cfg[k]}" for k in named) + f" agree with the checkpoint ({d_in} -> "
        f"{d_sae} features)" if named else
        f"names no SAE size; sizes from the checkpoint ({d_in} -> {d_sae} features)"))
    clips = {k: _number(cfg, k, source, integer=False) for k in CLIP_KEYS if k in cfg}
    if len(set(clips.values())) > 1:
        raise ValueError(f"{source}: clip settings disagree: {clips}")
    if clips:
        clip = float(next(iter(clips.values())))
        if clip != sae.config.clip_max:
            sae = sae_from_params(dataclasses.replace(sae.config, clip_max=clip), sae.params(),
                                  sae.usage_ema[...])
        findings.append(f"{Path(source).name}: features clipped at {clip:g}")
    else:
        findings.append(f"{Path(source).name}: no clip setting; the original's clip at "
                        f"{sae.config.clip_max:g} applies")
    return sae, findings


def consolidated_to_labels(raw: dict, *, source: str) -> dict:
    """SplatNLP's consolidated label file -> the label store's JSON (``{"<feature>":
    {"name", "category", "notes", "timestamp", ...}}``). An entry's feature is its
    ``feature_id`` or else its key; entries without a name are left out; a category outside
    :data:`sae_jax.feature_labels.CATEGORIES` becomes ``none`` (the entry's own keys are kept)."""
    out = {}
    for key, entry in raw.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{source}: entry {key!r} is not an object")
        feature = entry.get("feature_id", key)
        try:
            feature = int(feature)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: entry {key!r}: feature id {feature!r} is not an "
                             "integer") from None
        name = entry.get("display_name") or entry.get("dashboard_name") or ""
        if not isinstance(name, str) or not name.strip():
            continue
        category = entry.get("dashboard_category")
        notes = entry.get("dashboard_notes") or ""
        out[str(feature)] = {
            **{k: v for k, v in entry.items() if k not in ("name", "category", "notes",
                                                         "timestamp")},
            "name": name, "category": category if category in CATEGORIES else "none",
            "notes": notes if isinstance(notes, str) else json.dumps(notes), "timestamp": "",
        }
    return out
