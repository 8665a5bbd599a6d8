"""Calibration and selective-prediction metric maths, array and streaming forms."""
