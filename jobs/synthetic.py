"""Synthetic journeys with known incremental effects per channel, and a confounder.

Each person is exposed to each channel independently (``reach``), in random
order over ``span_days``. Conversion is additive: a baseline no channel causes,
plus each touched channel's ``effect``. The confounder: a share of people
(``high_intent``) have a much higher baseline and usually end their journey on
``search`` or ``direct`` - the pattern that makes last touch over-credit those
channels. The truth is each channel's share of the conversions channels caused:
``effect * people exposed``, normalised (baseline conversions belong to no channel).

>>> world = SyntheticWorld()
>>> journeys = generate(world, persons=2000, seed=1)
>>> len(journeys), sorted(truth_shares(world, journeys))[:2]
(2000, ['direct', 'display'])
>>> generate(world, persons=50, seed=3) == generate(world, persons=50, seed=3)
True
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Journey", "SyntheticWorld", "generate", "truth_shares"]


@dataclass(frozen=True)
class Journey:
    touches: tuple[tuple[str, float], ...]
    """(channel, age in days before the journey's end), in touch order."""
    converted: bool
    high_intent: bool


@dataclass(frozen=True)
class SyntheticWorld:
    effect: dict[str, float] = field(
        default_factory=lambda: {"search": 0.06, "email": 0.04, "social": 0.03, "display": 0.01, "direct": 0.0}
    )
    """Added conversion probability when the person was exposed to the channel."""
    reach: dict[str, float] = field(
        default_factory=lambda: {"search": 0.35, "email": 0.3, "social": 0.4, "display": 0.5, "direct": 0.25}
    )
    baseline: float = 0.02
    high_intent: float = 0.15
    high_intent_baseline: float = 0.35
    high_intent_last_touch: float = 0.8
    """Chance a high-intent person's journey ends on search or direct."""
    span_days: float = 20.0


def generate(world: SyntheticWorld, persons: int, seed: int) -> list[Journey]:
    """``persons`` journeys, the same for the same world and seed."""
    rng = random.Random(seed)
    channels = sorted(world.effect)
    out = []
    for _ in range(persons):
        intent = rng.random() < world.high_intent
        touched = [c for c in channels if rng.random() < world.reach[c]]
        rng.shuffle(touched)
        if intent and rng.random() < world.high_intent_last_touch:
            touched.append("search" if rng.random() < 0.5 else "direct")
        ages = sorted((rng.uniform(0, world.span_days) for _ in touched), reverse=True)
        p = (world.high_intent_baseline if intent else world.baseline) + sum(world.effect[c] for c in set(touched))
        out.append(Journey(tuple(zip(touched, ages, strict=True)), rng.random() < min(p, 1.0), intent))
    return out


def truth_shares(world: SyntheticWorld, journeys: list[Journey]) -> dict[str, float]:
    """Each channel's share of the conversions channels caused in ``journeys`` (expected values)."""
    exposed = Counter(c for j in journeys for c in {c for c, _ in j.touches})
    caused = {c: world.effect[c] * exposed[c] for c in world.effect}
    total = sum(caused.values())
    return {c: v / total for c, v in caused.items()}
