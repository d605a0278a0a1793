"""Versioned event contract (``event.v<N>.avsc``), its registry and the payload decoder."""
