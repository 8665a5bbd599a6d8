"""The abstain policy: calibrate each prediction and withhold those below the threshold."""
