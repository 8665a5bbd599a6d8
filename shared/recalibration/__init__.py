"""Calibration maps and the methods that fit them, calibration sets, the validation gate."""
