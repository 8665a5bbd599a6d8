"""Router worker: the one writer of routing counts, fed exactly once from its topics."""
