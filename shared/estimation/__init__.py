"""Before-labels estimation: confidence-based performance estimates and guaranteed-risk thresholds."""
