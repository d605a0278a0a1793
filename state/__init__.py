"""Recoverable keyed state: journeys, device graphs, windows, dedup."""

import creditflow  # noqa: F401  (first: serves the compiled modules when their build matches, creditflow/native.py)
