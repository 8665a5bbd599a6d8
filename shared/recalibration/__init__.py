"""Calibration maps: how a raw confidence becomes a calibrated one."""
