"""The aggregator: calibration and risk-coverage statistics per model version and window."""
