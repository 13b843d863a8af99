"""The gear-build model: vocabulary, weapons, builds and their readers, the synthetic
build world and its concept sets, training examples, the Flax ``SetCompletionModel`` and
its training; legal builds (slot allocator, beam-search completion, its evaluation); the
conditions a build can meet and legal edits of builds."""

from pathlib import Path as _Path

# The primary's flagfiles (primary_demo.flags: the demo primary the SAE demo trains).
PRIMARY_CONFIGS = _Path(__file__).resolve().parent / "configs"
