"""Tiny shared fixtures for the harvest, evaluation and SAE-run tests (built once per process)."""

from functools import cache

from primary.model import PrimaryConfig, create_model

HIDDEN = 16


@cache
def tiny_world(num_builds: int = 12, seed: int = 3):
    """``(builds, vocab, weapon_vocab)`` of a small synthetic world."""
    from primary.sources import default_vocabs, load_builds

    builds = load_builds("synthetic", num_builds=num_builds, seed=seed)
    vocab, weapon_vocab = default_vocabs(builds)
    return builds, vocab, weapon_vocab


@cache
def tiny_primary(vocab_size: int, weapon_vocab_size: int, pad_id: int, seed: int = 1):
    """A 1-layer, 16-wide SetCompletionModel (shared: clone it before changing it)."""
    cfg = PrimaryConfig(vocab_size=vocab_size, weapon_vocab_size=weapon_vocab_size,
                        embedding_dim=8, hidden_dim=HIDDEN, num_layers=1, num_heads=2,
                        num_inducing_points=4, pad_token_id=pad_id)
    return create_model(cfg, seed)


def primary_for(vocab, weapon_vocab, seed: int = 1):
    return tiny_primary(len(vocab), len(weapon_vocab), vocab.pad_id, seed)
