"""Steering shown as builds: complete a build with SAE features set, and compare.

The primary model completes a partial build twice: once as it is ("before") and
once with the SAE spliced in before its output layer and one or several
features overwritten ("after", :func:`steered_logits_fn`). Both runs use the same
legal beam search (:mod:`primary.completion`), so the difference is the edit's
effect on a whole build. :func:`diff_builds` lines the two up slot by slot
(mains per piece; subs matched so that an ability both builds hold in a sub
keeps its place) and lists the AP and token changes; :func:`steered_builds`
returns everything as JSON-ready dicts with a plain-text rendering.

By default the edit keeps the SAE's reconstruction error
(``x + decode(h') - decode(h)``), so "after" differs from "before" only by the
edit itself; ``keep_error=False`` feeds ``decode(h')`` onward, the original's
EDIT mode, which also carries the reconstruction error into "after".

:func:`steered_batch_logits_fn` completes many builds at once, each with its own edits:
every model row takes its build's features and values (as many for every build: fewer are
padded with feature -1, which sets nothing), and a row computes exactly what
:func:`steered_logits_fn` with that build's edits computes in a call of the same size, or,
with padding edits only, the plain model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bridge.steering import check_feature_index, edit_feature_params
from primary.allocator import min_ap_row
from primary.completion import CompletedBuild, LogitsFn, complete_build, resolve_weapon
from primary.model import HashedGraph, SetCompletionModel
from primary.vocab import Vocab, WeaponVocab
from primary.weapons import weapon_name
from sae_jax.model import SparseAutoencoder, decode, encode, unit_rows


def edit_features_params(params, spec, x: jax.Array, features: jax.Array, values: jax.Array,
                         keep_error: bool = True) -> jax.Array:
    """Set features ``features (k,)`` to ``values (k,)`` in every row of ``x (..., d_in)``
    at once (one encoding); one feature is exactly :func:`bridge.steering.edit_feature_params`."""
    if features.shape[0] == 1:
        return edit_feature_params(params, spec, x, features[0], values[0], keep_error)
    _, h = encode(params, x, spec)
    select = jax.nn.one_hot(features, h.shape[-1], dtype=h.dtype)  # (k, F)
    mask = jnp.minimum(select.sum(0), 1.0)
    target = values.astype(h.dtype) @ select
    edited = h * (1.0 - mask) + target
    if keep_error:
        return x.astype(h.dtype) + (edited - h) @ unit_rows(params["W_dec"])
    return decode(params, edited)


def edit_rows_params(params, spec, x: jax.Array, features: jax.Array, values: jax.Array,
                     keep_error: bool = True) -> jax.Array:
    """Set features ``features (B, k)`` to ``values (B, k)`` in ``x (B, d_in)``, each row its
    own edits; row ``b`` is :func:`edit_features_params` with ``features[b]``, ``values[b]``
    (the same operations, so the same numbers). A feature of -1 sets nothing (its one-hot
    row is zero): with ``keep_error`` a row's numbers are those of its other edits alone, and
    a row of padding only is ``x`` itself."""
    if features.shape[1] == 1:
        return edit_feature_params(params, spec, x, features[:, 0], values[:, 0], keep_error)
    _, h = encode(params, x, spec)
    select = jax.nn.one_hot(features, h.shape[-1], dtype=h.dtype)  # (B, k, F)
    mask = jnp.minimum(select.sum(1), 1.0)
    target = jnp.einsum("bk,bkf->bf", values.astype(h.dtype), select)
    edited = h * (1.0 - mask) + target
    if keep_error:
        return x.astype(h.dtype) + (edited - h) @ unit_rows(params["W_dec"])
    return decode(params, edited)


@partial(jax.jit, static_argnames=("graph", "spec", "keep_error"))
def _steered_logits(graph, state, sae_params, features, values, tokens, weapons,
                    key_padding_mask, *, spec, keep_error):
    model = nnx.merge(graph.graphdef, state)
    pooled = model.pooled(tokens, weapons, key_padding_mask)
    return model.head(edit_features_params(sae_params, spec, pooled, features, values,
                                           keep_error))


@partial(jax.jit, static_argnames=("graph", "spec", "keep_error"))
def _steered_batch_logits(graph, state, sae_params, tokens, weapons, key_padding_mask,
                          features, values, *, spec, keep_error):
    model = nnx.merge(graph.graphdef, state)
    pooled = model.pooled(tokens, weapons, key_padding_mask)
    return model.head(edit_rows_params(sae_params, spec, pooled, features, values, keep_error))


def _edits(feature, value, num_features: int) -> tuple[np.ndarray, np.ndarray]:
    features = np.atleast_1d(np.asarray(feature))
    values = np.atleast_1d(np.asarray(value, np.float32))
    if features.ndim != 1 or len(features) == 0:
        raise ValueError(f"feature must be an index or a list of indices, got {feature!r}")
    if values.shape != features.shape:
        raise ValueError(f"{len(features)} feature(s) but {values.size} value(s): give one value "
                         "per feature")
    if not np.isfinite(values).all():
        raise ValueError(f"steering values must be finite, got {value!r}")
    if len(set(features.tolist())) != len(features):
        raise ValueError(f"feature listed twice in {feature!r}")
    check_feature_index(features, num_features, where="steered completion")
    return features.astype(np.int32), values


def steered_logits_fn(primary: SetCompletionModel, sae: SparseAutoencoder, feature, value, *,
                      keep_error: bool = True) -> LogitsFn:
    """A ``logits_fn`` for :mod:`primary.completion`: the model with ``feature`` (an index or a
    list) set to ``value`` (one per feature) by the SAE before the output layer."""
    if sae.config.input_dim != primary.config.hidden_dim:
        raise ValueError(f"SAE input_dim {sae.config.input_dim} does not match the primary "
                         f"model's hidden_dim {primary.config.hidden_dim}")
    features, values = _edits(feature, value, sae.hidden_dim)
    graphdef, state = nnx.split(primary)
    return partial(_steered_logits, HashedGraph(graphdef), state, sae.params(),
                   jnp.asarray(features),
                   jnp.asarray(values), spec=sae.config.encoder, keep_error=bool(keep_error))


def steered_batch_logits_fn(primary: SetCompletionModel, sae: SparseAutoencoder, *,
                            keep_error: bool = True, split=None):
    """A ``logits_fn`` for :func:`primary.completion.complete_builds` with
    ``logits_inputs=(features (n, k) int32, values (n, k) float32)``: each build completed
    with its own ``k`` features set (distinct per build, checked by the caller; -1 pads).
    ``split``: ``nnx.split(primary)`` when the caller keeps one."""
    if sae.config.input_dim != primary.config.hidden_dim:
        raise ValueError(f"SAE input_dim {sae.config.input_dim} does not match the primary "
                         f"model's hidden_dim {primary.config.hidden_dim}")
    graphdef, state = split or nnx.split(primary)
    return partial(_steered_batch_logits, HashedGraph(graphdef), state, sae.params(),
                   spec=sae.config.encoder, keep_error=bool(keep_error))


# ----------------------------------------------------------------------------- diff


@dataclass(frozen=True)
class SlotChange:
    """One slot of both builds: ``slot`` is "main" or "sub 1".."sub 3"."""

    piece: str
    slot: str
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass(frozen=True)
class BuildDiff:
    """Slot-by-slot and AP-by-ability differences between two full builds."""

    slots: tuple[SlotChange, ...]
    ap: dict[str, tuple[int, int]]  # ability -> (before, after), changed ones only
    tokens_added: tuple[str, ...]
    tokens_removed: tuple[str, ...]

    @property
    def changed_slots(self) -> int:
        return sum(s.changed for s in self.slots)

    def to_dict(self) -> dict:
        return {
            "slots": [{"piece": s.piece, "slot": s.slot, "before": s.before, "after": s.after,
                       "changed": s.changed} for s in self.slots],
            "changed_slots": self.changed_slots,
            "ap": {a: {"before": b, "after": c, "change": c - b} for a, (b, c) in self.ap.items()},
            "tokens_added": list(self.tokens_added),
            "tokens_removed": list(self.tokens_removed),
        }

    def render(self) -> str:
        """Plain text: every slot (changed ones marked), then the AP changes."""
        lines = []
        for s in self.slots:
            mark = "*" if s.changed else " "
            text = f"{s.before} -> {s.after}" if s.changed else s.before
            lines.append(f"{mark} {s.piece:<8} {s.slot:<6} {text}")
        if self.ap:
            lines.append("AP: " + ", ".join(f"{a} {b} -> {c}" for a, (b, c) in self.ap.items()))
        else:
            lines.append("AP: unchanged")
        return "\n".join(lines)


def _align_subs(before: Sequence[str], after: Sequence[str]) -> list[str]:
    """``after``'s subs reordered so that abilities ``before`` also has in a sub stay put."""
    spare = Counter(after)
    out: list[str | None] = [None] * len(before)
    for i, b in enumerate(before):
        if spare[b] > 0:
            out[i] = b
            spare[b] -= 1
    rest = []
    for a in after:  # the others, in their order
        if spare[a] > 0:
            rest.append(a)
            spare[a] -= 1
    it = iter(rest)
    return [o if o is not None else next(it) for o in out]


def diff_builds(before: CompletedBuild, after: CompletedBuild) -> BuildDiff:
    """Slot-by-slot diff of two full builds (see the module docstring)."""
    slots = []
    sub_before = [s for p in before.pieces for s in p.subs]
    sub_after = _align_subs(sub_before, [s for p in after.pieces for s in p.subs])
    per = len(before.pieces[0].subs)
    for i, (pb, pa) in enumerate(zip(before.pieces, after.pieces)):
        slots.append(SlotChange(pb.piece, "main", pb.main, pa.main))
        for j in range(per):
            slots.append(SlotChange(pb.piece, f"sub {j + 1}", sub_before[i * per + j],
                                    sub_after[i * per + j]))
    names = sorted(set(before.ap) | set(after.ap))
    ap = {a: (before.ap.get(a, 0), after.ap.get(a, 0)) for a in names
          if before.ap.get(a, 0) != after.ap.get(a, 0)}
    tb, ta = set(before.tokens), set(after.tokens)
    return BuildDiff(tuple(slots), ap, tuple(t for t in after.tokens if t not in tb),
                     tuple(t for t in before.tokens if t not in ta))


# ----------------------------------------------------------------------------- entry point


def steered_builds(primary: SetCompletionModel, sae: SparseAutoencoder, vocab: Vocab,
                   weapon_vocab: WeaponVocab, weapon, observed: Mapping[str, int] | np.ndarray,
                   feature, value, *, beam_size: int = 4, keep_error: bool = True,
                   fixed_width: bool = False) -> dict:
    """Complete ``observed`` for ``weapon`` (game id or name) without and with the edit.

    ``feature``: an SAE feature index or a list of them; ``value``: the value(s) they are set
    to. ``observed``: ``{ability: AP}`` or a ``(26,)`` AP row (minimum AP, kept);
    ``fixed_width``: see :func:`primary.completion.complete_builds`. Returns a
    JSON-ready dict: ``weapon``, ``weapon_name``, ``observed``, ``edits`` ([{feature,
    value}]), ``keep_error``, ``before`` and ``after`` (builds, see
    ``CompletedBuild.to_dict``), ``diff`` (:meth:`BuildDiff.to_dict`) and ``text`` (both
    builds and the diff as plain text).
    """
    gid = resolve_weapon(weapon, weapon_vocab)
    row = min_ap_row(observed, where="observed abilities")
    features, values = _edits(feature, value, sae.hidden_dim)
    before = complete_build(primary, vocab, weapon_vocab, gid, row, beam_size=beam_size,
                            fixed_width=fixed_width).best
    fn = steered_logits_fn(primary, sae, features, values, keep_error=keep_error)
    after = complete_build(primary, vocab, weapon_vocab, gid, row, beam_size=beam_size,
                           logits_fn=fn, fixed_width=fixed_width).best
    diff = diff_builds(before, after)
    edits = [{"feature": int(f), "value": float(v)} for f, v in zip(features, values)]
    title = ", ".join(f"feature {e['feature']} = {e['value']:g}" for e in edits)
    text = "\n".join([f"before:\n{before.describe()}", f"after ({title}):\n{after.describe()}",
                      f"diff ({diff.changed_slots} of {len(diff.slots)} slots changed):",
                      diff.render()])
    return {"weapon": gid, "weapon_name": weapon_name(gid), "observed": before.observed,
            "edits": edits, "keep_error": bool(keep_error), "before": before.to_dict(),
            "after": after.to_dict(), "diff": diff.to_dict(), "text": text}


__all__ = ["BuildDiff", "SlotChange", "diff_builds", "edit_features_params", "edit_rows_params",
           "steered_batch_logits_fn", "steered_builds", "steered_logits_fn"]
