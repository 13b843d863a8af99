"""SetCompletionModel in Flax NNX: SplatNLP's set transformer for gear builds.

Exactly the original's architecture (see ``docs/original.md`` §3):
MAB / SAB / ISAB / PMA blocks, set-transformer layers with cross attention,
masked mean pooling and a linear output head. The pooled 512-d vector (the
SAE's input) is exposed directly through :meth:`SetCompletionModel.pooled`, and
the head through :meth:`SetCompletionModel.head`, so harvesting and steering
need no hooks.

Dropout is driven by an explicit ``dropout_key`` argument (None = inference),
so a training step is a pure function of (params, batch, key).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from runkit.jsonio import parse_json_file, write_json

LN_EPS = 1e-5


@dataclass(frozen=True)
class PrimaryConfig:
    """Constructor arguments, named as in the original's ``model_params.json``."""

    vocab_size: int
    weapon_vocab_size: int
    embedding_dim: int = 32
    hidden_dim: int = 512
    output_dim: int | None = None  # defaults to vocab_size
    num_layers: int = 3
    num_heads: int = 8
    num_inducing_points: int = 32
    use_layer_norm: bool = True
    dropout: float = 0.0
    pad_token_id: int | None = None  # defaults to vocab_size - 1

    def __post_init__(self):
        if self.output_dim is None:
            object.__setattr__(self, "output_dim", self.vocab_size)
        if self.pad_token_id is None:
            object.__setattr__(self, "pad_token_id", self.vocab_size - 1)
        for name in ("vocab_size", "weapon_vocab_size", "embedding_dim", "hidden_dim",
                     "output_dim", "num_layers", "num_heads", "num_inducing_points"):
            if int(getattr(self, name)) <= 0:
                value = getattr(self, name)
                raise ValueError(f"PrimaryConfig.{name} must be positive, got {value}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} outside [0, {self.vocab_size})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> PrimaryConfig:
        """Read ``config.json`` / the original's ``model_params.json`` (see :meth:`from_dict`)."""
        raw = parse_json_file(path, what="model config")
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw, *, source: str = "model parameters") -> PrimaryConfig:
        """A config from the original's constructor arguments; every key is type-checked
        (an integer is not a float or a bool, ``use_layer_norm`` is true or false), and a
        missing, mistyped or unknown key is an error naming it, ``source`` and the type
        expected. Only ``dropout`` and ``pad_token_id`` may be absent (see below)."""
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: expected a JSON object of model parameters, got "
                             f"{_json_type(raw)}")
        raw = dict(raw)
        # Written into model_params.json by the original's training CLI but not a model
        # setting (mixed precision is a training option): checked, then ignored.
        if "use_mixed_precision" in raw:
            _typed(raw.pop("use_mixed_precision"), "use_mixed_precision", bool, source)
        # A constructor argument of some versions of the original (default 2): the number of
        # Linear layers of each feed-forward. Ours is the 2-layer one; any other is refused.
        if "num_layers_mlp" in raw:
            n = _typed(raw.pop("num_layers_mlp"), "num_layers_mlp", int, source)
            if n != 2:
                raise ValueError(f"{source}: num_layers_mlp {n} is not supported (this model "
                                 "has the original's default 2-layer feed-forward)")
        unknown = sorted(set(raw) - set(_PARAM_TYPES))
        if unknown:
            raise ValueError(f"{source}: unknown model parameters {unknown}")
        # May be absent: dropout (the original's constructor default is 0.0, and it acts only
        # in training) and pad_token_id (absent or null in the original: no padding_idx; the
        # original's vocabularies put <PAD> last, our default, which an import checks
        # against vocab.json). Every other key changes the model and is required.
        optional = {"dropout": 0.0, "pad_token_id": None}
        missing = [k for k in _PARAM_TYPES if k not in raw and k not in optional]
        if missing:
            need = ", ".join(f"{k} ({_KIND_NAMES[_PARAM_TYPES[k]]})" for k in missing)
            raise ValueError(f"{source}: missing model parameter(s) {need}; no default is "
                             "assumed, as a wrong one would change the model")
        values = {}
        for key, kind in _PARAM_TYPES.items():
            if key not in raw or (key == "pad_token_id" and raw[key] is None):
                values[key] = optional[key]
            else:
                values[key] = _typed(raw[key], key, kind, source)
        try:
            return cls(**values)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    def to_json(self, path: str | os.PathLike) -> None:
        write_json(path, dataclasses.asdict(self))


# model_params.json: each key's JSON type (the original's constructor arguments).
_PARAM_TYPES: dict[str, type] = {
    "vocab_size": int, "weapon_vocab_size": int, "embedding_dim": int, "hidden_dim": int,
    "output_dim": int, "num_layers": int, "num_heads": int, "num_inducing_points": int,
    "use_layer_norm": bool, "dropout": float, "pad_token_id": int,
}
_KIND_NAMES = {int: "an integer", bool: "true or false", float: "a finite number"}


def _json_type(value) -> str:
    """A bad value as a message shows it: ``"4" (a string)``."""
    if value is None:
        return "null"
    kind = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({kind})"


def _typed(value, key: str, kind: type, source: str):
    """``value`` if it is a JSON ``kind``: a bool is no number, a float no integer."""
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = type(value) is int
    else:
        ok = type(value) in (int, float) and math.isfinite(value)
    if not ok:
        raise ValueError(f"{source}: {key} must be {_KIND_NAMES[kind]}, got "
                         f"{_json_type(value)}")
    return float(value) if kind is float else value


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class _Keys:
    """Hands out a fresh dropout key per call site (or None at inference)."""

    def __init__(self, key: jax.Array | None):
        self._key = key
        self._n = 0

    def __call__(self) -> jax.Array | None:
        if self._key is None:
            return None
        self._n += 1
        return jax.random.fold_in(self._key, self._n)


class MultiHeadAttention(nnx.Module):
    """torch.nn.MultiheadAttention semantics: fused q/k/v input projection, output projection.

    ``key_padding_mask``: ``Bool[Array, "b k"]``, True = padding (gets zero weight).
    ``q`` may lack the batch axis (``(n, d)``: learned queries shared by every set); it
    is then projected once, not once per set, and broadcast in the attention product.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float, *, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.dropout = dropout
        # Kernel columns [q | k | v], like torch's in_proj_weight rows [q; k; v] transposed.
        self.in_proj = nnx.Linear(dim, 3 * dim, kernel_init=nnx.initializers.xavier_uniform(),
                                  bias_init=nnx.initializers.zeros, rngs=rngs)
        self.out_proj = nnx.Linear(dim, dim, bias_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, q, kv, key_padding_mask=None, *, keys: _Keys):
        d = q.shape[-1]
        w, b = self.in_proj.kernel[...], self.in_proj.bias[...]
        qh = q @ w[:, :d] + b[:d]
        kh = kv @ w[:, d : 2 * d] + b[d : 2 * d]
        vh = kv @ w[:, 2 * d :] + b[2 * d :]
        h = self.num_heads

        def split(t):  # (b, n, d) -> (b, h, n, d/h)
            return t.reshape(*t.shape[:-1], h, d // h).swapaxes(-2, -3)

        qh, kh, vh = split(qh), split(kh), split(vh)
        scores = (qh @ kh.swapaxes(-1, -2)) / jnp.sqrt(jnp.asarray(d // h, q.dtype))
        if key_padding_mask is not None:
            scores = jnp.where(key_padding_mask[:, None, None, :], -jnp.inf, scores)
        attn = jax.nn.softmax(scores, axis=-1)
        attn = _dropout(attn, self.dropout, keys())
        out = (attn @ vh).swapaxes(-2, -3)  # (b, n, h, d/h)
        return self.out_proj(out.reshape(*out.shape[:-2], d))


class FeedForward(nnx.Module):
    """Linear(D, 4D) -> exact GELU -> Linear(4D, D) (dropout between, in training)."""

    def __init__(self, dim: int, dropout: float, *, rngs: nnx.Rngs):
        self.dropout = dropout
        self.fc1 = nnx.Linear(dim, 4 * dim, rngs=rngs)
        self.fc2 = nnx.Linear(4 * dim, dim, rngs=rngs)

    def __call__(self, x, *, keys: _Keys):
        x = jax.nn.gelu(self.fc1(x), approximate=False)
        x = _dropout(x, self.dropout, keys())
        return self.fc2(x)


def _layer_norm(dim: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(dim, epsilon=LN_EPS, rngs=rngs)


class MAB(nnx.Module):
    """Multihead attention block: ``x = LN1(q + MHA(q, k, k)); x = LN2(x + FF(x))``.

    ``q``: ``(b, n, d)``, or ``(n, d)`` learned queries shared by the batch (see
    MultiHeadAttention); the result is ``(b, n, d)`` either way."""

    def __init__(self, dim, num_heads, use_layer_norm, dropout, *, rngs):
        self.mha = MultiHeadAttention(dim, num_heads, dropout, rngs=rngs)
        self.feedforward = FeedForward(dim, dropout, rngs=rngs)
        self.dropout = dropout
        self.layer_norm1 = _layer_norm(dim, rngs) if use_layer_norm else None
        self.layer_norm2 = _layer_norm(dim, rngs) if use_layer_norm else None

    def __call__(self, q, k, key_padding_mask=None, *, keys: _Keys):
        x = q + _dropout(self.mha(q, k, key_padding_mask, keys=keys), self.dropout, keys())
        if self.layer_norm1 is not None:
            x = self.layer_norm1(x)
        x = x + _dropout(self.feedforward(x, keys=keys), self.dropout, keys())
        if self.layer_norm2 is not None:
            x = self.layer_norm2(x)
        return x


def _learned_points(m: int, dim: int, rngs: nnx.Rngs) -> nnx.Param:
    return nnx.Param(nnx.initializers.xavier_uniform()(rngs.params(), (m, dim)))


class ISAB(nnx.Module):
    """Induced set attention: ``h = MAB1(I, x, mask); out = LN(MAB2(x, h) + x)``."""

    def __init__(self, dim, num_heads, m, use_layer_norm, dropout, *, rngs):
        self.inducing_points = _learned_points(m, dim, rngs)
        self.mab1 = MAB(dim, num_heads, use_layer_norm, dropout, rngs=rngs)
        self.mab2 = MAB(dim, num_heads, use_layer_norm, dropout, rngs=rngs)
        self.layer_norm = _layer_norm(dim, rngs)  # present whatever use_layer_norm says

    def __call__(self, x, key_padding_mask, *, keys: _Keys):
        # The unbatched points: MAB1 broadcasts them after their (shared) query projection.
        h = self.mab1(self.inducing_points[...], x, key_padding_mask, keys=keys)
        return self.layer_norm(self.mab2(x, h, keys=keys) + x)


class PMA(nnx.Module):
    """Pooling by multihead attention onto learned seeds, then a Linear(D, D)."""

    def __init__(self, dim, num_heads, m, use_layer_norm, dropout, *, rngs):
        self.seed_vectors = _learned_points(m, dim, rngs)
        self.mab = MAB(dim, num_heads, use_layer_norm, dropout, rngs=rngs)
        self.out_proj = nnx.Linear(dim, dim, rngs=rngs)

    def __call__(self, x, key_padding_mask, *, keys: _Keys):
        return self.out_proj(self.mab(self.seed_vectors[...], x, key_padding_mask, keys=keys))


class SAB(nnx.Module):
    """Set attention block: ``MAB(y, y)`` (no mask: applied to PMA outputs)."""

    def __init__(self, dim, num_heads, use_layer_norm, dropout, *, rngs):
        self.mab = MAB(dim, num_heads, use_layer_norm, dropout, rngs=rngs)

    def __call__(self, y, *, keys: _Keys):
        return self.mab(y, y, keys=keys)


class SetTransformer(nnx.Module):
    """``x += ISAB1; x += ISAB2; y = PMA(x); y += SAB2(y); y += SAB3(y)`` -> ``(b, m, D)``."""

    def __init__(self, dim, num_heads, m, use_layer_norm, dropout, *, rngs):
        args = (dim, num_heads, m, use_layer_norm, dropout)
        self.enc_layer1 = ISAB(*args, rngs=rngs)
        self.enc_layer2 = ISAB(*args, rngs=rngs)
        self.dec_layer1 = PMA(*args, rngs=rngs)
        self.dec_layer2 = SAB(dim, num_heads, use_layer_norm, dropout, rngs=rngs)
        self.dec_layer3 = SAB(dim, num_heads, use_layer_norm, dropout, rngs=rngs)

    def __call__(self, x, key_padding_mask, *, keys: _Keys):
        x = self.enc_layer1(x, key_padding_mask, keys=keys) + x
        x = self.enc_layer2(x, key_padding_mask, keys=keys) + x
        y = self.dec_layer1(x, key_padding_mask, keys=keys)
        y = self.dec_layer2(y, keys=keys) + y
        return self.dec_layer3(y, keys=keys) + y


class SetTransformerLayer(nnx.Module):
    """Summarise the set, let every element attend to the summary, then a feed-forward."""

    def __init__(self, dim, num_heads, m, use_layer_norm, dropout, *, rngs):
        self.dropout = dropout
        self.set_transformer = SetTransformer(dim, num_heads, m, use_layer_norm, dropout, rngs=rngs)
        self.cross_attention = MAB(dim, num_heads, use_layer_norm, dropout, rngs=rngs)
        self.feedforward = FeedForward(dim, dropout, rngs=rngs)
        self.layer_norm1 = _layer_norm(dim, rngs) if use_layer_norm else None
        self.layer_norm2 = _layer_norm(dim, rngs) if use_layer_norm else None

    def __call__(self, x, key_padding_mask, *, keys: _Keys):
        s = self.set_transformer(x, key_padding_mask, keys=keys)
        x = x + _dropout(self.cross_attention(x, s, keys=keys), self.dropout, keys())
        if self.layer_norm1 is not None:
            x = self.layer_norm1(x)
        x = x + _dropout(self.feedforward(x, keys=keys), self.dropout, keys())
        if self.layer_norm2 is not None:
            x = self.layer_norm2(x)
        return x


class SetCompletionModel(nnx.Module):
    """Predicts the full ability-token set of a build from a partial one and its weapon.

    Shapes: ``tokens: Int[Array, "b n"]`` right-padded with ``pad_token_id``;
    ``weapons: Int[Array, "b 1"]``; ``key_padding_mask: Bool[Array, "b n"]``
    (True = padding). ``pooled`` -> ``Float[Array, "b hidden_dim"]``;
    ``head`` -> ``Float[Array, "b output_dim"]`` logits.
    """

    def __init__(self, config: PrimaryConfig, *, rngs: nnx.Rngs):
        c = config
        self.config = c
        emb_init = nnx.initializers.normal(1.0)
        table = emb_init(rngs.params(), (c.vocab_size, c.embedding_dim))
        self.ability_embedding = nnx.Embed(c.vocab_size, c.embedding_dim, rngs=rngs)
        self.ability_embedding.embedding[...] = table.at[c.pad_token_id].set(0.0)
        self.weapon_embedding = nnx.Embed(c.weapon_vocab_size, c.embedding_dim, rngs=rngs)
        self.input_proj = (
            nnx.Linear(c.embedding_dim, c.hidden_dim, rngs=rngs)
            if c.embedding_dim != c.hidden_dim
            else None
        )
        self.transformer_layers = nnx.List([
            SetTransformerLayer(c.hidden_dim, c.num_heads, c.num_inducing_points,
                                c.use_layer_norm, c.dropout, rngs=rngs)
            for _ in range(c.num_layers)
        ])
        self.output_layer = nnx.Linear(c.hidden_dim, c.output_dim, rngs=rngs)

    def pooled(self, tokens, weapons, key_padding_mask, *, dropout_key=None):
        """The masked-mean pooled vector: the SAE's input."""
        c = self.config
        keys = _Keys(dropout_key)
        not_pad = (tokens != c.pad_token_id)[..., None]
        # padding_idx semantics: the pad row contributes zero and receives no gradient.
        e = self.ability_embedding(tokens) * not_pad + self.weapon_embedding(weapons)
        x = self.input_proj(e) if self.input_proj is not None else e
        for layer in self.transformer_layers:
            x = layer(x, key_padding_mask, keys=keys)
        valid = (~key_padding_mask)[..., None].astype(x.dtype)
        count = jnp.maximum(valid.sum(axis=1), 1.0)
        return (x * valid).sum(axis=1) / count

    def head(self, pooled):
        """Logits over the vocabulary from a pooled vector."""
        return self.output_layer(pooled)

    def __call__(self, tokens, weapons, key_padding_mask, *, dropout_key=None):
        return self.head(self.pooled(tokens, weapons, key_padding_mask, dropout_key=dropout_key))


class HashedGraph:
    """An ``nnx.GraphDef`` as a jit static argument, hashed once.

    jit hashes its static arguments on every call, and flax hashes a GraphDef by walking all
    of it (about a millisecond for the primary's): a beam search calls the model once per
    step. Equal graphs make equal keys, so they share their compiled programs."""

    __slots__ = ("graphdef", "_hash")

    def __init__(self, graphdef):
        self.graphdef = graphdef
        self._hash = hash(graphdef)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return isinstance(other, HashedGraph) and (other.graphdef is self.graphdef
                                                   or other.graphdef == self.graphdef)


def create_model(config: PrimaryConfig, seed: int = 0) -> SetCompletionModel:
    return SetCompletionModel(config, rngs=nnx.Rngs(seed))


def count_params(model_or_state) -> int:
    state = model_or_state
    if not isinstance(state, nnx.State):
        state = nnx.state(model_or_state, nnx.Param)
    return sum(int(x.size) for x in jax.tree.leaves(state))
