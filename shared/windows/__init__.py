"""Redis window layouts: each written by one worker and read through the same code."""
