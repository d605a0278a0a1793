"""Versioned event contract (``event.v<N>.avsc``), its registry and the payload decoder."""

import creditflow  # noqa: F401  (first: serves the compiled modules when their build matches, creditflow/native.py)
