"""The drift worker: reference profiles, windowed feature histograms, drift scores and alerts."""
