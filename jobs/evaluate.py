"""Each method's per-channel credit shares against a known truth, and its largest error.

    python -m jobs.evaluate --persons 50000 --seed 1

Rule-based shares count the credit each method gives over the converting
journeys; data-driven shares are the fitted weights (Markov removal effects,
Shapley values over channel sets, the logistic incrementality model). The
error of a method is its largest absolute share difference over the channels.

>>> from jobs.synthetic import SyntheticWorld
>>> report = evaluate(SyntheticWorld(), persons=3000, seed=2)
>>> sorted(report.errors)
['first_touch', 'incrementality', 'last_touch', 'linear', 'markov', 'shapley']
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass

from creditflow.attribution import first_touch, last_touch, linear
from jobs.incrementality import fit_logistic
from jobs.markov import removal_effects
from jobs.shapley import shapley_values
from jobs.shares import normalised
from jobs.synthetic import Journey, SyntheticWorld, generate, truth_shares

__all__ = ["RULES", "Evaluation", "evaluate", "rule_shares"]

RULES = {"first_touch": first_touch, "last_touch": last_touch, "linear": linear}
"""The rule-based models compared, from the streaming scorer's own maths."""


@dataclass(frozen=True)
class Evaluation:
    truth: dict[str, float]
    shares: dict[str, dict[str, float]]
    """method -> channel -> credit share."""
    errors: dict[str, float]
    """method -> largest absolute share error over the channels."""


def rule_shares(journeys: list[Journey], rule: str) -> dict[str, float]:
    """Credit shares of ``first_touch``, ``last_touch`` or ``linear`` over the converting journeys."""
    model = RULES.get(rule)
    if model is None:
        raise ValueError(f"unknown rule {rule!r}: use first_touch, last_touch or linear")
    credit: defaultdict[str, float] = defaultdict(float)
    for j in journeys:
        if j.converted:
            for (channel, _), share in zip(j.touches, model(len(j.touches)), strict=True):
                if share:
                    credit[channel] += share
    return normalised(credit)


def evaluate(world: SyntheticWorld, persons: int, seed: int) -> Evaluation:
    """Generate, fit every method, compare with the truth."""
    journeys = generate(world, persons, seed)
    truth = truth_shares(world, journeys)
    shares = {rule: rule_shares(journeys, rule) for rule in ("first_touch", "last_touch", "linear")}
    shares["markov"] = removal_effects((tuple(c for c, _ in j.touches), j.converted) for j in journeys).weights
    shares["shapley"] = shapley_values(({c for c, _ in j.touches}, j.converted) for j in journeys).weights
    shares["incrementality"] = fit_logistic((j.touches, j.converted) for j in journeys).weights
    errors = {m: max(abs(s.get(c, 0.0) - truth[c]) for c in truth) for m, s in shares.items()}
    return Evaluation(truth, shares, errors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    report = evaluate(SyntheticWorld(), args.persons, args.seed)
    channels = sorted(report.truth)
    print(f"{'method':16}" + "".join(f"{c:>10}" for c in channels) + f"{'max error':>11}")
    print(f"{'truth':16}" + "".join(f"{report.truth[c]:10.3f}" for c in channels))
    for method, shares in sorted(report.shares.items(), key=lambda kv: report.errors[kv[0]]):
        row = "".join(f"{shares.get(c, 0.0):10.3f}" for c in channels)
        print(f"{method:16}{row}{report.errors[method]:11.3f}")


if __name__ == "__main__":
    main()
