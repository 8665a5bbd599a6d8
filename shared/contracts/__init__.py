"""Message contracts: the codec, batches, error codes, topics, dead letters, validation."""
