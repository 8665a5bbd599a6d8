"""Developer and operator tooling: local stack, supervisor, the caliber CLI, benchmark helpers."""
