"""Developer and operator tooling: rebuilding stores from the log (the runtime never imports it)."""
