"""The model registry as the workers see it: its events and an in-memory view."""
