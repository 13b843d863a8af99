"""Model inputs of builds: each build's tokens, weapon and padding mask as arrays.

Analysis, the causal check of feature explanations and the scripts run full builds
(nothing masked out) through the primary model, and the analysis also runs partial builds
(:mod:`primary.partial_builds`, some tokens left out); this is the one place that turns
token sets into the model's input arrays.
"""

from __future__ import annotations

import numpy as np

from primary.vocab import ABILITY_TOKENS, BuildError, ap_to_token_multihot


def token_inputs(multihot: np.ndarray, game_ids: np.ndarray, vocab, weapon_vocab, *,
                 where: str = "builds") -> dict:
    """Model inputs for token sets ``multihot (n, 138)`` over
    :data:`primary.vocab.ABILITY_TOKENS` with weapons ``game_ids (n,)``: ``tokens (n, L)``
    right-padded in tokenisation order, ``weapons (n, 1)``, ``key_padding_mask (n, L)``
    (True = pad), ``weight (n,)`` ones. An empty set is ``[<NULL>]``; a token the
    vocabulary lacks is an error naming it."""
    multihot = np.asarray(multihot, bool)
    ids = vocab.ability_token_ids
    present_missing = multihot[:, ids < 0].any(0)
    if present_missing.any():
        bad = [t for t, m in zip(np.asarray(ABILITY_TOKENS)[ids < 0], present_missing) if m]
        raise BuildError(f"tokens {bad[:5]} of {where} are not in {vocab.source}")
    lengths = multihot.sum(1)
    width = max(1, int(lengths.max(initial=0)))
    tokens = np.full((len(multihot), width), vocab.pad_id, np.int32)
    # Place each row's token ids left-aligned, in tokenisation order.
    pos = np.cumsum(multihot, axis=1) - 1
    rows, cols = np.nonzero(multihot)
    tokens[rows, pos[rows, cols]] = ids[cols]
    tokens[lengths == 0, 0] = vocab.null_id
    weapons = weapon_vocab.encode_game_ids(game_ids, where=where)[:, None]
    return {"tokens": tokens, "weapons": weapons.astype(np.int32),
            "key_padding_mask": tokens == vocab.pad_id,
            "weight": np.ones(len(multihot), np.float32)}


def full_build_inputs(builds, vocab, weapon_vocab, *, where: str = "builds") -> dict:
    """Model inputs for each full build (:func:`token_inputs` of its tokens): ``tokens (n,
    L)`` right-padded, ``weapons (n, 1)``, ``key_padding_mask (n, L)`` (True = pad),
    ``weight (n,)`` ones. An empty build is ``[<NULL>]``; a token the vocabulary lacks is
    an error naming it."""
    return token_inputs(ap_to_token_multihot(builds.ap), builds.weapons, vocab, weapon_vocab,
                        where=where)
