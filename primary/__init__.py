"""The gear-build model: vocabulary, weapons, builds and their readers, the synthetic
build world, training examples, the Flax ``SetCompletionModel`` and its training."""
