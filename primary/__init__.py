"""The gear-build model: vocabulary, weapons, builds and their readers, the synthetic
build world and its concept sets, training examples, the Flax ``SetCompletionModel`` and
its training; legal builds (slot allocator, beam-search completion, its evaluation); the
conditions a build can meet and legal edits of builds."""
