"""Drift statistics, reference profiles and their scores."""
