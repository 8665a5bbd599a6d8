"""Alert publishing and the alert state machine."""
