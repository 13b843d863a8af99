"""The workbench's build lab: a partial build in, the model's legal completion out.

:func:`lab_request` checks a request (every bad field named), :func:`complete_lab` runs
it: the completion (:mod:`primary.completion`; input shapes as
:func:`primary.completion.prefers_fixed_width` says), the model's token probabilities for the
partial build, the SAE features active on it with their labels and what they push, and,
when features are set, the steered completion (:mod:`bridge.steered_completion`) with a
slot-by-slot diff. Plain completions are cached, so setting a feature on the build just
completed costs one completion.

:func:`complete_labs` answers several requests at once (the workbench's batcher,
:mod:`apps.workbench.completion_batcher`, gathers them) with one beam search for all the
completions they need, plain and steered: each build steered by its own edits
(:func:`bridge.steered_completion.steered_batch_logits_fn`; a plain one by none), the
builds padded to a size of :data:`BATCH_SIZES` and the edits to a count of
:data:`EDIT_SIZES`, so that the compiled shapes stay few (the warm-up compiles them). A
padding edit changes nothing, to the bit: each build's logits are those of its own
completion in a call of the same size. Calls of other sizes XLA may round differently in
the last bits of a float, so a batched answer equals the one-at-a-time one but for the
last bits of the builds' scores (and its build, should two moves tie to within that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from apps.analysis.report import token_label
from apps.workbench.run_state import COMPLETION_CACHE, RunData
from bridge.steered_completion import (
    diff_builds,
    edit_features_params,
    steered_batch_logits_fn,
)
from primary.allocator import min_ap_row
from primary.completion import (
    CompletedBuild,
    check_observed,
    complete_builds,
    model_logits_fn,
    prefers_fixed_width,
    resolve_weapon,
)
from primary.examples import LENGTH_BUCKETS
from primary.model import HashedGraph
from primary.vocab import ABILITIES, MAX_AP, BuildError, ap_to_token_multihot, resolve_ability
from sae_jax.model import encode

BEAM_SIZE = 4
TOP_PROBABILITIES = 15
TOP_FEATURES = 24
ACTIVE = 0.01
MAX_EDITS = 16

# Builds completed in one beam search, padded to the next of these sizes, and the edits per
# build, padded to the next of these counts: each program compiles for these shapes only.
BATCH_SIZES = (1, 2, 4, 8, 16)
EDIT_SIZES = (2, 4, 8, MAX_EDITS)
# Requests answered together: each may need a plain and a steered completion.
MAX_BATCH = BATCH_SIZES[-1] // 2

# A feature set beyond this is far past any activation the SAE produces, and float32
# products of it overflow.
MAX_EDIT_VALUE = 1e4


def _shown(value) -> str:
    """``repr`` of a request value, except an integer too long to print (Python refuses to
    turn one of over 4,300 digits into text): then its length."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1:,} digits"
    return f"{value!r:.60}"


class LabRequestError(ValueError):
    """A bad build-lab request; ``field`` names the offending part."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class LabRequest:
    weapon: int
    row: np.ndarray  # (26,) minimum AP
    features: tuple[int, ...]
    values: tuple[float, ...]


def lab_request(body, run: RunData) -> LabRequest:
    """Check a ``POST /api/complete`` body: ``{"weapon", "abilities": {name: AP},
    "edits": [{"feature", "value"}]}``."""
    if not isinstance(body, dict):
        raise LabRequestError("body", "expected a JSON object with weapon, abilities, edits")
    unknown = set(body) - {"weapon", "abilities", "edits"}
    if unknown:
        raise LabRequestError(sorted(unknown)[0], "unknown field; fields: weapon, abilities, "
                                                  "edits")
    _, _, weapon_vocab, _ = run.models()
    if "weapon" not in body:
        raise LabRequestError("weapon", "missing (a game id or a weapon name)")
    weapon = body["weapon"]
    if (isinstance(weapon, bool) or not isinstance(weapon, (int, str))
            or isinstance(weapon, int) and weapon.bit_length() > 64):
        raise LabRequestError("weapon", f"a game id or a weapon name, got {_shown(weapon)}")
    try:
        gid = resolve_weapon(weapon, weapon_vocab)
    except BuildError as e:
        raise LabRequestError("weapon", str(e).removeprefix("weapon: ")) from None
    abilities = body.get("abilities", {})
    if not isinstance(abilities, dict):
        raise LabRequestError("abilities", f"an object {{ability: AP}}, got {abilities!r:.60}")
    named = {}
    for name, ap in abilities.items():
        try:
            ability = resolve_ability(name, where="ability")
        except BuildError as e:
            raise LabRequestError(f"abilities.{name}", str(e).removeprefix("ability: ")) from None
        if ability in named:
            raise LabRequestError(f"abilities.{name}", f"names {ability!r} again (as "
                                                       f"{named[ability]!r})")
        named[ability] = name
        if isinstance(ap, bool) or not isinstance(ap, int) or not 0 <= ap <= MAX_AP:
            raise LabRequestError(f"abilities.{name}", f"AP must be an integer 0..{MAX_AP}, "
                                                       f"got {_shown(ap)}")
    abilities = {ability: abilities[name] for ability, name in named.items()}
    row = min_ap_row(abilities, where="abilities")
    try:
        check_observed(row[None], where="abilities")
    except BuildError as e:
        raise LabRequestError("abilities", str(e).removeprefix("abilities: ")) from None
    edits = body.get("edits", [])
    if not isinstance(edits, list):
        raise LabRequestError("edits", f"a list of {{feature, value}}, got {edits!r:.60}")
    if len(edits) > MAX_EDITS:
        raise LabRequestError("edits", f"at most {MAX_EDITS} edits, got {len(edits)}")
    features, values = [], []
    for i, e in enumerate(edits):
        where = f"edits[{i}]"
        if not isinstance(e, dict) or set(e) != {"feature", "value"}:
            raise LabRequestError(where, "expected {\"feature\": F, \"value\": V}, got "
                                         f"{e!r:.60}")
        f, v = e["feature"], e["value"]
        if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < run.num_features:
            raise LabRequestError(f"{where}.feature", f"a feature id 0..{run.num_features - 1}, "
                                                      f"got {_shown(f)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise LabRequestError(f"{where}.value", f"a finite number, got {_shown(v)}")
        if abs(v) > MAX_EDIT_VALUE:
            raise LabRequestError(f"{where}.value", f"a number within ±{MAX_EDIT_VALUE:g}, "
                                                    f"got {_shown(v)}")
        if f in features:
            raise LabRequestError(f"{where}.feature", f"feature {f} is set twice")
        features.append(f)
        values.append(float(v))
    return LabRequest(gid, row, tuple(features), tuple(values))


@partial(jax.jit, static_argnames=("graph", "spec"))
def _lab_forward(graph, state, sae_params, tokens, weapons, mask, features, values, *, spec):
    """Pooled input -> (SAE activations as is, as edited, logits of the edited model)."""
    model = nnx.merge(graph.graphdef, state)
    pooled = model.pooled(tokens, weapons, mask)
    _, h = encode(sae_params, pooled, spec)
    if features.shape[0] == 0:
        return h, h, model.head(pooled)
    edited = edit_features_params(sae_params, spec, pooled, features, values, True)
    select = jax.nn.one_hot(features, h.shape[-1], dtype=h.dtype)
    h_set = h * (1.0 - select.sum(0)) + values.astype(h.dtype) @ select
    return h, h_set, model.head(edited)


def _inputs(row: np.ndarray, weapon: int, vocab, weapon_vocab):
    """One partial build as model inputs ``(1, L)``, right-padded to the largest length
    bucket so that every request has one shape (one compilation); ``[<NULL>]`` when
    empty."""
    hot = ap_to_token_multihot(row[None])[0] & (vocab.ability_token_ids >= 0)
    ids = vocab.ability_token_ids[hot]
    tokens = np.full((1, max(LENGTH_BUCKETS[-1], len(ids))), vocab.pad_id, np.int32)
    tokens[0, :len(ids)] = ids
    if not len(ids):
        tokens[0, 0] = vocab.null_id
    weapons = weapon_vocab.encode_game_ids(np.array([weapon]), where="weapon")[:, None]
    return tokens, weapons.astype(np.int32), tokens == vocab.pad_id


def complete_lab(run: RunData, req: LabRequest, *, beam_size: int = BEAM_SIZE) -> dict:
    """The build lab's answer (JSON-ready): ``build`` (the completion, steered when there are
    edits), ``before`` and ``diff`` (with edits), ``probabilities`` (the model's top ability
    tokens for the partial build), ``active_features``."""
    return complete_labs(run, [req], beam_size=beam_size)[0]


def complete_labs(run: RunData, reqs: list[LabRequest], *, beam_size: int = BEAM_SIZE
                  ) -> list[dict]:
    """:func:`complete_lab` of each request, completed together (see the module docstring);
    more than :data:`MAX_BATCH` requests go in several batches."""
    if len(reqs) > MAX_BATCH:
        return [answer for start in range(0, len(reqs), MAX_BATCH)
                for answer in complete_labs(run, reqs[start:start + MAX_BATCH],
                                            beam_size=beam_size)]
    keys = [(r.weapon, r.row.tobytes(), beam_size) for r in reqs]
    with run.lock:
        plain = _cached(run, keys)  # a steered request usually follows its plain one
        missing = {key: replace(req, features=(), values=())
                   for key, req in zip(keys, reqs) if key not in plain}
        steered = [i for i, r in enumerate(reqs) if r.features]
        built = lab_completions(run, list(missing.values()) + [reqs[i] for i in steered],
                                beam_size=beam_size)
        for key, build in zip(missing, built):
            plain[key] = run.completions[key] = build
        while len(run.completions) > COMPLETION_CACHE:
            run.completions.popitem(last=False)
        befores = [plain[key] for key in keys]
        afters = list(befores)
        for i, build in zip(steered, built[len(missing):]):
            afters[i] = build
        graph = HashedGraph(run.split_primary()[0])
        forwards = [_forward(run, req, graph) for req in reqs]
    return [_answer(run, req, before, after, forward)
            for req, before, after, forward in zip(reqs, befores, afters, forwards)]


def _cached(run: RunData, keys: list[tuple]) -> dict:
    """The plain completions of ``keys`` the cache holds, each marked used (so that the
    completions added next drop others first)."""
    found = {}
    for key in keys:
        if key in run.completions:
            found[key] = run.completions[key]
            run.completions.move_to_end(key)
    return found


def _forward(run: RunData, req: LabRequest, graph: HashedGraph):
    """The lab's forward pass of one request: SAE activations as is and as edited, and the
    edited model's logits, each ``(1, ...)``; ``graph``: the primary's, hashed once."""
    _, vocab, weapon_vocab, sae = run.models()
    state = run.split_primary()[1]
    tokens, weapons, mask = _inputs(req.row, req.weapon, vocab, weapon_vocab)
    return _lab_forward(graph, state, sae.params(), jnp.asarray(tokens), jnp.asarray(weapons),
                        jnp.asarray(mask), jnp.asarray(req.features, jnp.int32),
                        jnp.asarray(req.values, jnp.float32), spec=sae.config.encoder)


def lab_completions(run: RunData, reqs: list[LabRequest], *, beam_size: int = BEAM_SIZE
                    ) -> list[CompletedBuild]:
    """The best completion of each request (none when ``reqs`` is empty), each steered by
    its own edits, in one beam search: up to ``BATCH_SIZES[-1]`` requests, padded to the
    next size of :data:`BATCH_SIZES`, their edits to the next count of :data:`EDIT_SIZES`
    with edits of feature -1 (which change nothing); the plain model when no request has
    edits. No cache."""
    if not reqs:
        return []
    size = next((b for b in BATCH_SIZES if b >= len(reqs)), None)
    if size is None:
        raise ValueError(f"lab_completions takes at most {BATCH_SIZES[-1]} requests, got "
                         f"{len(reqs)}")
    primary, vocab, weapon_vocab, sae = run.models()
    split = run.split_primary()
    most = max(len(r.features) for r in reqs)
    if most == 0:
        logits_fn, inputs = model_logits_fn(primary, split=split), ()
    else:
        k = next(e for e in EDIT_SIZES if e >= most)
        features = np.full((len(reqs), k), -1, np.int32)
        values = np.zeros((len(reqs), k), np.float32)
        for i, r in enumerate(reqs):
            features[i, :len(r.features)] = r.features
            values[i, :len(r.values)] = r.values
        logits_fn = steered_batch_logits_fn(primary, sae, split=split)
        inputs = (features, values)
    weapons = np.array([r.weapon for r in reqs])
    rows = np.stack([r.row for r in reqs])
    batch = complete_builds(primary, vocab, weapon_vocab, weapons, rows, beam_size=beam_size,
                            logits_fn=logits_fn, rows_per_call=size * beam_size,
                            fixed_width=prefers_fixed_width(primary), logits_inputs=inputs)
    return [batch.best_build(i, r.weapon, r.row) for i, r in enumerate(reqs)]


def _answer(run: RunData, req: LabRequest, before: CompletedBuild, after: CompletedBuild,
            forward) -> dict:
    """The JSON-ready answer from the completions and the lab's forward pass."""
    _, vocab, _, _ = run.models()
    h0, h1, logits = (np.asarray(x)[0] for x in forward)
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    have = np.flatnonzero(vocab.ability_token_ids >= 0)
    token_ids = vocab.ability_token_ids[have]
    observed = set(np.asarray(vocab.ability_token_ids)[ap_to_token_multihot(req.row[None])[0]])
    order = np.argsort(-probs[token_ids], kind="stable")
    probabilities = [{"token": vocab.id_to_token[int(token_ids[i])],
                      "label": token_label(vocab.id_to_token[int(token_ids[i])]),
                      "p": float(probs[token_ids[i]]),
                      "observed": int(token_ids[i]) in observed}
                     for i in order[:TOP_PROBABILITIES]]
    result = {"build": after.to_dict(), "probabilities": probabilities,
              "active_features": _active(run, h0, h1, after, vocab),
              "edits": [{"feature": f, "value": v} for f, v in zip(req.features, req.values)]}
    if req.features:
        result["before"] = before.to_dict()
        result["diff"] = diff_builds(before, after).to_dict()
    return result


def _active(run: RunData, h0: np.ndarray, h1: np.ndarray, build, vocab) -> list[dict]:
    """Features active on the partial build (as edited), strongest first, with labels and
    ``contribution``: activation x logit influence summed over the tokens the completion
    added (how much the feature pushed what was added)."""
    ids = np.flatnonzero((h1 > ACTIVE) | (h0 > ACTIVE))
    ids = ids[np.argsort(-np.maximum(h1[ids], h0[ids]), kind="stable")][:TOP_FEATURES]
    influence = run.influence()
    added = [vocab.token_to_id[t] for t in build.tokens if t in vocab.token_to_id
             and t not in set(_observed_tokens(build))]
    labels = run.labels()
    out = []
    for f in ids:
        f = int(f)
        push = influence[f] * h1[f]
        top = np.argsort(-push)[:3]
        expl = run.explanation(f)
        out.append({"feature": f, "activation": float(h1[f]), "unedited": float(h0[f]),
                    "label": (labels.get(str(f)) or {}).get("name", ""),
                    "explanation": (expl or {}).get("rule_text", ""),
                    "contribution": float(push[added].sum()) if added else 0.0,
                    "promotes": [{"token": vocab.id_to_token[int(t)],
                                  "label": token_label(vocab.id_to_token[int(t)]),
                                  "logit": float(push[t])} for t in top if push[t] > 0]})
    return out


def _observed_tokens(build) -> list[str]:
    from primary.vocab import tokenize_build

    return tokenize_build(build.observed) if build.observed else []


def lab_choices(run: RunData) -> dict:
    """What the lab's form offers: the model's weapons (``weapons``), the roster's other kits,
    which the model was not trained on (``other_weapons``, shown but not chosen), and the
    abilities."""
    from apps.analysis.report import ability_label
    from primary.vocab import MAIN_ONLY_ABILITIES
    from primary.weapons import WEAPONS, find_weapon, weapon_name

    _, _, weapon_vocab, _ = run.models()

    def entry(gid: int) -> dict:
        w = find_weapon(gid)
        return {"id": gid, "name": weapon_name(gid), "class": w.weapon_class if w else ""}

    known = {int(g) for g in weapon_vocab.game_ids}
    weapons = sorted((entry(g) for g in known), key=lambda w: w["name"])
    others = sorted((entry(w.game_id) for w in WEAPONS if w.game_id not in known),
                    key=lambda w: w["name"])
    abilities = [{"name": a, "label": ability_label(a), "main_only": a in MAIN_ONLY_ABILITIES}
                 for a in ABILITIES]
    return {"weapons": weapons, "other_weapons": others, "abilities": abilities}


def lab_url(weapon: int, abilities, *, feature: int | None = None,
            value: float | None = None) -> str:
    """The build lab's address with a build loaded, as ``static/lab.js`` reads it:
    ``/lab?weapon=GID&abilities=name:AP,...`` (``abilities``: ``{name: AP}`` or pairs),
    with ``feature`` (and ``value``, default 0) as a feature edit."""
    from urllib.parse import urlencode

    pairs = abilities.items() if isinstance(abilities, dict) else abilities
    params = {"weapon": int(weapon),
              "abilities": ",".join(f"{name}:{int(ap)}" for name, ap in pairs)}
    if feature is not None:
        params["feature"] = int(feature)
        params["value"] = f"{0.0 if value is None else float(value):.4g}"
    return "/lab?" + urlencode(params)


def feature_activation(run: RunData, weapon: int, abilities: dict, feature: int) -> float:
    """``feature``'s activation on a partial build (the lab's own forward pass)."""
    req = lab_request({"weapon": weapon, "abilities": abilities}, run)
    with run.lock:
        # the same calls as a plain request: nothing new to trace
        h, _, _ = _forward(run, req, HashedGraph(run.split_primary()[0]))
    return float(np.asarray(h)[0, feature])
