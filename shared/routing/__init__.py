"""Outcome routing maths: Thompson sampling with recency, a floor and the trust invariant."""
