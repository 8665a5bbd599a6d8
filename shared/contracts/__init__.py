"""Message contracts: codec, batches, errors, topics, dead letters, validation, limits."""
