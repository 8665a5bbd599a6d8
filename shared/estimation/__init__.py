"""Before-labels estimation: performance estimated from confidence, guaranteed-risk thresholds."""
