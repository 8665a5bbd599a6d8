"""The calibrator: fits, validates and stages calibration maps from production labels."""
