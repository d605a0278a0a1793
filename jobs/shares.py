"""Credit shares: per-channel amounts scaled to sum to 1.

>>> normalised({"search": 3.0, "email": 1.0})
{'search': 0.75, 'email': 0.25}
>>> normalised({"search": 0.0})
{'search': 0.0}
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["normalised"]


def normalised(amounts: Mapping[str, float]) -> dict[str, float]:
    """``amounts`` divided by their sum; all 0 when they sum to 0 (nothing to share)."""
    total = sum(amounts.values())
    return {c: (v / total if total > 0 else 0.0) for c, v in amounts.items()}
