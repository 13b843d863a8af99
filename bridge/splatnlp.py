"""Import a SplatNLP run directory (PyTorch checkpoints) into our Flax models, without torch.

A SplatNLP run directory holds ``model_params.json`` (SetCompletionModel constructor
arguments), ``vocab.json``, ``weapon_vocab.json`` and the model's ``.pth``
(``torch.save(model.state_dict())``); the SAE's ``.pth`` may sit beside it.

Every tensor goes through an explicit name map (:func:`primary_name_map`,
:data:`SAE_NAME_MAP`) with a coverage check: each source tensor must be used,
each target parameter filled, and each shape must be the one ``model_params.json``
implies. Layout changes are explicit transposes:

- torch ``Linear.weight`` (out, in) -> our ``kernel`` (in, out);
- ``nn.MultiheadAttention.in_proj_weight`` (3D, D), rows [q; k; v] -> our
  ``mha.in_proj.kernel`` (D, 3D), columns [q | k | v];
- ``LayerNorm.weight`` -> ``scale``; ``Embedding.weight`` -> ``embedding``;
- SAE ``encoder.weight`` (H, D) -> ``W_enc`` (D, H); ``decoder.weight`` (D, H)
  -> ``W_dec`` (H, D) (rows are atoms; both sides normalise them at use time);
  ``decoder_bias`` -> ``b_dec``. The original never uses ``decoder.bias``: it
  is read, checked for shape and recorded in :attr:`SplatNLPRun.notes`.

Checkpoints saved from DistributedDataParallel carry a ``module.`` prefix on
every key; it is stripped.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bridge.torch_pickle import load_state_dict
from primary.model import PrimaryConfig, SetCompletionModel, create_model
from primary.vocab import Vocab, WeaponVocab
from sae_jax.model import SAEConfig, SparseAutoencoder, sae_from_params

DDP_PREFIX = "module."


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not match the model its run directory describes."""


@dataclass(frozen=True)
class TensorMapping:
    """One source tensor -> one target parameter.

    ``dims`` spells the source (torch) shape in ``model_params.json`` terms, e.g.
    ``("3*hidden_dim", "hidden_dim")``; ``transpose`` swaps a 2-D tensor's axes.
    """

    source: str
    target: tuple
    dims: tuple[str, ...]
    transpose: bool = False


_PRIMARY_DIMS = {
    "vocab_size": lambda c: c.vocab_size,
    "weapon_vocab_size": lambda c: c.weapon_vocab_size,
    "embedding_dim": lambda c: c.embedding_dim,
    "hidden_dim": lambda c: c.hidden_dim,
    "3*hidden_dim": lambda c: 3 * c.hidden_dim,
    "4*hidden_dim": lambda c: 4 * c.hidden_dim,
    "output_dim": lambda c: c.output_dim,
    "num_inducing_points": lambda c: c.num_inducing_points,
}


def _linear(src: str, dst: tuple, out_dim: str, in_dim: str) -> list[TensorMapping]:
    return [TensorMapping(f"{src}.weight", dst + ("kernel",), (out_dim, in_dim), transpose=True),
            TensorMapping(f"{src}.bias", dst + ("bias",), (out_dim,))]


def _layer_norm(src: str, dst: tuple) -> list[TensorMapping]:
    return [TensorMapping(f"{src}.weight", dst + ("scale",), ("hidden_dim",)),
            TensorMapping(f"{src}.bias", dst + ("bias",), ("hidden_dim",))]


def _feedforward(src: str, dst: tuple) -> list[TensorMapping]:
    # torch nn.Sequential(Linear, GELU, Linear): indices 0 and 2 hold the weights.
    return (_linear(f"{src}.0", dst + ("fc1",), "4*hidden_dim", "hidden_dim")
            + _linear(f"{src}.2", dst + ("fc2",), "hidden_dim", "4*hidden_dim"))


def _mab(src: str, dst: tuple, use_layer_norm: bool) -> list[TensorMapping]:
    out = [
        TensorMapping(f"{src}.mha.in_proj_weight", dst + ("mha", "in_proj", "kernel"),
                      ("3*hidden_dim", "hidden_dim"), transpose=True),
        TensorMapping(f"{src}.mha.in_proj_bias", dst + ("mha", "in_proj", "bias"),
                      ("3*hidden_dim",)),
        *_linear(f"{src}.mha.out_proj", dst + ("mha", "out_proj"), "hidden_dim", "hidden_dim"),
        *_feedforward(f"{src}.feedforward", dst + ("feedforward",)),
    ]
    if use_layer_norm:
        out += _layer_norm(f"{src}.layer_norm1", dst + ("layer_norm1",))
        out += _layer_norm(f"{src}.layer_norm2", dst + ("layer_norm2",))
    return out


def _set_transformer(src: str, dst: tuple, ln: bool) -> list[TensorMapping]:
    out = []
    for enc in ("enc_layer1", "enc_layer2"):
        s, d = f"{src}.{enc}", dst + (enc,)
        out.append(TensorMapping(f"{s}.inducing_points", d + ("inducing_points",),
                                 ("num_inducing_points", "hidden_dim")))
        out += _mab(f"{s}.mab1", d + ("mab1",), ln) + _mab(f"{s}.mab2", d + ("mab2",), ln)
        out += _layer_norm(f"{s}.layer_norm", d + ("layer_norm",))  # ISAB's LN is unconditional
    s, d = f"{src}.dec_layer1", dst + ("dec_layer1",)
    out.append(TensorMapping(f"{s}.seed_vectors", d + ("seed_vectors",),
                             ("num_inducing_points", "hidden_dim")))
    out += _mab(f"{s}.mab", d + ("mab",), ln)
    out += _linear(f"{s}.out_proj", d + ("out_proj",), "hidden_dim", "hidden_dim")
    for dec in ("dec_layer2", "dec_layer3"):
        out += _mab(f"{src}.{dec}.mab", dst + (dec, "mab"), ln)
    return out


def primary_name_map(config: PrimaryConfig) -> list[TensorMapping]:
    """Every tensor of a SetCompletionModel state dict and where it goes in our model."""
    ln = config.use_layer_norm
    out = [
        TensorMapping("ability_embedding.weight", ("ability_embedding", "embedding"),
                      ("vocab_size", "embedding_dim")),
        TensorMapping("weapon_embedding.weight", ("weapon_embedding", "embedding"),
                      ("weapon_vocab_size", "embedding_dim")),
    ]
    if config.embedding_dim != config.hidden_dim:  # otherwise the original has no input_proj
        out += _linear("input_proj", ("input_proj",), "hidden_dim", "embedding_dim")
    for i in range(config.num_layers):
        src, dst = f"transformer_layers.{i}", ("transformer_layers", i)
        out += _set_transformer(f"{src}.set_transformer", dst + ("set_transformer",), ln)
        out += _mab(f"{src}.cross_attention", dst + ("cross_attention",), ln)
        out += _feedforward(f"{src}.feedforward", dst + ("feedforward",))
        if ln:
            out += _layer_norm(f"{src}.layer_norm1", dst + ("layer_norm1",))
            out += _layer_norm(f"{src}.layer_norm2", dst + ("layer_norm2",))
    out += _linear("output_layer", ("output_layer",), "output_dim", "hidden_dim")
    return out


# SAE: dims in terms of d_in (the SAE input = primary hidden_dim) and d_sae (features).
SAE_NAME_MAP: tuple[TensorMapping, ...] = (
    TensorMapping("encoder.weight", ("W_enc",), ("d_sae", "d_in"), transpose=True),
    TensorMapping("encoder.bias", ("b_enc",), ("d_sae",)),
    TensorMapping("decoder.weight", ("W_dec",), ("d_in", "d_sae"), transpose=True),
    TensorMapping("decoder_bias", ("b_dec",), ("d_in",)),
    TensorMapping("usage_ema", ("usage_ema",), ("d_sae",)),
)
# Present in the original's state dict but never used by its forward pass.
SAE_UNUSED: tuple[TensorMapping, ...] = (TensorMapping("decoder.bias", (), ("d_in",)),)


def strip_ddp_prefix(state: dict[str, np.ndarray], *, source: str) -> dict[str, np.ndarray]:
    """Remove DistributedDataParallel's ``module.`` key prefix (from every key or none)."""
    prefixed = [k for k in state if k.startswith(DDP_PREFIX)]
    if not prefixed:
        return dict(state)
    if len(prefixed) != len(state):
        plain = sorted(k for k in state if not k.startswith(DDP_PREFIX))
        raise CheckpointMismatchError(
            f"{source}: some keys carry the DDP prefix {DDP_PREFIX!r} and some do not "
            f"(e.g. {plain[:3]})"
        )
    return {k[len(DDP_PREFIX):]: v for k, v in state.items()}


def _expected_shape(m: TensorMapping, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(sizes[d] for d in m.dims)


def _check_coverage(state: dict[str, np.ndarray], mappings, *, source: str, what: str) -> None:
    expected = [m.source for m in mappings]
    missing = [k for k in expected if k not in state]
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) {missing[:6]}"
                         f"{' ...' if len(missing) > 6 else ''}")
        if extra:
            parts.append(f"unexpected {len(extra)} tensor(s) {extra[:6]}"
                         f"{' ...' if len(extra) > 6 else ''}")
        raise CheckpointMismatchError(f"{source} does not match {what}: " + "; ".join(parts))


def _check_shapes(state, mappings, sizes: dict[str, int], *, source: str, what: str) -> None:
    for m in mappings:
        got, want = tuple(state[m.source].shape), _expected_shape(m, sizes)
        if got != want:
            implied = ", ".join(f"{d}={sizes[d]}" for d in dict.fromkeys(m.dims))
            raise CheckpointMismatchError(
                f"{source}: tensor {m.source!r} has shape {got}, but {what} "
                f"({implied}) implies {want} = ({', '.join(m.dims)})"
            )


def _to_float32(x, name: str, source: str):
    """float32 copy of a tensor; ``astype`` keeps this working on shape-only (traced) input."""
    if not jnp.issubdtype(x.dtype, jnp.floating):  # jnp's check knows bfloat16
        raise CheckpointMismatchError(f"{source}: tensor {name!r} has dtype {x.dtype}, "
                                      "expected floating point")
    return x.astype(np.float32, copy=False)


def _set_path(tree: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def _flat_paths(tree) -> dict[tuple, tuple[int, ...]]:
    return {tuple(k.key for k in p): tuple(v.shape)
            for p, v in jax.tree_util.tree_leaves_with_path(tree)}


@functools.lru_cache(maxsize=4)
def _abstract_split(config: PrimaryConfig):
    """``(graphdef, shape-only state)`` of the model; tracing the initialisers is the slow part
    of an import, so it is done once per configuration. Callers must not mutate the state."""
    return nnx.split(nnx.eval_shape(lambda: create_model(config)))


def abstract_primary(config: PrimaryConfig) -> SetCompletionModel:
    """A shape-only model (no arrays allocated)."""
    graphdef, state = _abstract_split(config)
    return nnx.merge(graphdef, jax.tree.map(lambda x: x, state))


def convert_primary_state(state: dict[str, np.ndarray], config: PrimaryConfig, *,
                          source: str = "state dict") -> dict:
    """A SetCompletionModel state dict -> our nested parameter dict (float32 numpy).

    Works on numpy arrays, and under ``jax.eval_shape`` on shape-only input.

    Raises :class:`CheckpointMismatchError` naming any missing, unexpected or
    mis-shaped tensor.
    """
    state = strip_ddp_prefix(state, source=source)
    mappings = primary_name_map(config)
    what = "model_params.json"
    _check_coverage(state, mappings, source=source, what=what)
    sizes = {name: fn(config) for name, fn in _PRIMARY_DIMS.items()}
    _check_shapes(state, mappings, sizes, source=source, what=what)
    params: dict = {}
    for m in mappings:
        x = _to_float32(state[m.source], m.source, source)
        _set_path(params, m.target, x.T if m.transpose else x)
    _check_targets(params, config)
    return params


def _check_targets(params: dict, config: PrimaryConfig) -> None:
    """Every parameter of our model is filled, with its own shape (guards the name map)."""
    like = _flat_paths(_abstract_split(config)[1].to_pure_dict())
    got = _flat_paths(params)
    if set(like) != set(got):
        unfilled = sorted(map(str, set(like) - set(got)))
        unknown = sorted(map(str, set(got) - set(like)))
        raise RuntimeError(f"name map out of step with SetCompletionModel: unfilled {unfilled}, "
                           f"unknown {unknown}")
    for path, shape in like.items():
        if got[path] != shape:
            raise RuntimeError(f"name map gives {'/'.join(map(str, path))} shape {got[path]}, "
                               f"the model needs {shape}")


def primary_from_params(config: PrimaryConfig, params: dict) -> SetCompletionModel:
    """A SetCompletionModel holding ``params`` (skips random initialisation)."""
    graphdef, abstract = _abstract_split(config)
    state = jax.tree.map(lambda x: x, abstract)  # a fresh State: the cached one stays abstract
    state.replace_by_pure_dict(jax.tree.map(jnp.asarray, params))
    return nnx.merge(graphdef, state)


def convert_sae_state(state: dict[str, np.ndarray], *, expected_input_dim: int | None = None,
                      source: str = "SAE state dict") -> tuple[SAEConfig, dict, np.ndarray, list]:
    """An original SAE state dict -> ``(SAEConfig, params, usage_ema, notes)``.

    ``input_dim`` and the expansion factor come from ``encoder.weight``'s shape.
    """
    state = strip_ddp_prefix(state, source=source)
    # The unused tensors are accounted for when present and not required.
    mappings = SAE_NAME_MAP + tuple(m for m in SAE_UNUSED if m.source in state)
    what = "the SAE layout"
    _check_coverage(state, mappings, source=source, what=what)
    d_sae, d_in = (int(s) for s in state["encoder.weight"].shape)
    if expected_input_dim is not None and d_in != expected_input_dim:
        raise CheckpointMismatchError(
            f"{source}: SAE input dim {d_in} (encoder.weight shape "
            f"{tuple(state['encoder.weight'].shape)}) does not match the primary model's "
            f"hidden_dim {expected_input_dim}"
        )
    sizes = {"d_in": d_in, "d_sae": d_sae}
    _check_shapes(state, mappings, sizes, source=source, what=f"encoder.weight {(d_sae, d_in)}")
    config = SAEConfig(input_dim=d_in, expansion_factor=d_sae / d_in)
    if config.hidden_dim != d_sae:
        raise CheckpointMismatchError(f"{source}: {d_sae} features over input {d_in} is not an "
                                      "expansion factor SAEConfig can represent")
    values = {m.target[0]: _to_float32(state[m.source], m.source, source) for m in SAE_NAME_MAP}
    for m in SAE_NAME_MAP:
        if m.transpose:
            values[m.target[0]] = values[m.target[0]].T
    usage_ema = values.pop("usage_ema")
    notes = []
    for m in SAE_UNUSED:
        if m.source in state:
            unused = np.asarray(_to_float32(state[m.source], m.source, source))
            notes.append(f"{m.source} is unused by the original's forward pass (max |value| "
                         f"{float(np.abs(unused).max(initial=0.0)):.3g}); not imported")
    return config, values, usage_ema, notes


@dataclass
class SplatNLPRun:
    """An imported SplatNLP run: our models plus the run's vocabularies."""

    primary: SetCompletionModel
    sae: SparseAutoencoder | None
    vocab: Vocab
    weapon_vocab: WeaponVocab
    config: PrimaryConfig
    model_path: Path
    sae_path: Path | None = None
    notes: list[str] = field(default_factory=list)


def _resolve(path: str | os.PathLike, run_dir: Path) -> Path:
    p = Path(path)
    if not p.is_absolute() and not p.exists() and (run_dir / p).exists():
        p = run_dir / p
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint file {path} (looked in . and {run_dir})")
    return p


def find_model_file(run_dir: Path, sae_path: Path | None) -> Path:
    """The single ``*.pth`` in ``run_dir`` other than the SAE's."""
    sae_resolved = sae_path.resolve() if sae_path is not None else None
    candidates = sorted(p for p in run_dir.glob("*.pth") if p.resolve() != sae_resolved)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise FileNotFoundError(f"{run_dir} holds no model .pth file")
    names = [p.name for p in candidates]
    raise ValueError(f"{run_dir} holds several .pth files {names}: say which is the model "
                     "(model_file / --model) and which the SAE (sae_path / --sae)")


def _check_vocabularies(config: PrimaryConfig, vocab: Vocab, weapon_vocab: WeaponVocab,
                        run_dir: Path) -> None:
    if len(vocab) != config.vocab_size:
        raise CheckpointMismatchError(f"{run_dir}: vocab.json has {len(vocab)} tokens but "
                                      f"model_params.json says vocab_size {config.vocab_size}")
    if vocab.pad_id != config.pad_token_id:
        raise CheckpointMismatchError(f"{run_dir}: vocab.json puts <PAD> at {vocab.pad_id} but "
                                      f"model_params.json says pad_token_id {config.pad_token_id}")
    if len(weapon_vocab) != config.weapon_vocab_size:
        raise CheckpointMismatchError(
            f"{run_dir}: weapon_vocab.json has {len(weapon_vocab)} weapons but "
            f"model_params.json says weapon_vocab_size {config.weapon_vocab_size}"
        )


def load_splatnlp(run_dir: str | os.PathLike, sae_path: str | os.PathLike | None = None, *,
                  model_file: str | os.PathLike | None = None) -> SplatNLPRun:
    """Read a SplatNLP run directory (and optionally its SAE ``.pth``) into our models."""
    run_dir = Path(run_dir)
    for name in ("model_params.json", "vocab.json", "weapon_vocab.json"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir} is not a SplatNLP run directory: no {name}")
    config = PrimaryConfig.from_json(run_dir / "model_params.json")
    vocab = Vocab.load(run_dir / "vocab.json")
    weapon_vocab = WeaponVocab.load(run_dir / "weapon_vocab.json")
    _check_vocabularies(config, vocab, weapon_vocab, run_dir)

    sae_file = _resolve(sae_path, run_dir) if sae_path is not None else None
    model_path = (_resolve(model_file, run_dir) if model_file is not None
                  else find_model_file(run_dir, sae_file))
    params = convert_primary_state(load_state_dict(model_path), config, source=str(model_path))
    primary = primary_from_params(config, params)

    sae, notes = None, []
    if sae_file is not None:
        sae_config, sae_params, usage_ema, notes = convert_sae_state(
            load_state_dict(sae_file), expected_input_dim=config.hidden_dim, source=str(sae_file)
        )
        sae = sae_from_params(sae_config, sae_params, usage_ema)
    return SplatNLPRun(primary=primary, sae=sae, vocab=vocab, weapon_vocab=weapon_vocab,
                       config=config, model_path=model_path, sae_path=sae_file, notes=notes)
