"""Reusable Bytewax operators."""

import creditflow  # noqa: F401  (first: serves the compiled modules when their build matches, creditflow/native.py)
