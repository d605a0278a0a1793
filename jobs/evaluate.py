"""Each method's per-channel credit shares against a known truth, and its largest error.

    python -m jobs.evaluate --persons 50000 --seed 1 [--plot docs/evaluation.png]

Prints two worlds: the default one, with the high-intent confounder, and the
same without it. Rule-based shares count the credit each method gives over the
converting journeys; data-driven shares are the fitted weights (Markov removal
effects, Shapley values over channel sets, the confounder-robust incrementality
model, and the plain logistic model without ending controls as
``incrementality_naive``). ``chosen`` is the method ``jobs.train.train_tenant``
picks on held-out journeys, with its shares from the training split. The error
of a method is its largest absolute share difference over the channels.

>>> from jobs.synthetic import SyntheticWorld
>>> report = evaluate(SyntheticWorld(), persons=3000, seed=2)
>>> sorted(report.errors)
['chosen', 'first_touch', 'incrementality', 'incrementality_naive', 'last_touch', 'linear', 'markov', 'shapley']
>>> report.chosen in report.metrics
True
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass

from creditflow.attribution import first_touch, last_touch, linear
from jobs.incrementality import fit_incrementality, fit_logistic
from jobs.markov import removal_effects
from jobs.shapley import shapley_values
from jobs.shares import normalised
from jobs.synthetic import Journey, SyntheticWorld, generate, truth_shares
from jobs.train import train_tenant

__all__ = ["RULES", "Evaluation", "evaluate", "print_report", "rule_shares"]

RULES = {"first_touch": first_touch, "last_touch": last_touch, "linear": linear}
"""The rule-based models compared, from the streaming scorer's own maths."""


@dataclass(frozen=True)
class Evaluation:
    truth: dict[str, float]
    shares: dict[str, dict[str, float]]
    """method -> channel -> credit share."""
    errors: dict[str, float]
    """method -> largest absolute share error over the channels."""
    chosen: str
    """The data-driven method ``train_tenant`` chose (its shares are under ``"chosen"``)."""
    metrics: dict[str, dict[str, float]]
    """Data-driven method -> held-out metrics from ``train_tenant``."""


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
    data = [(j.touches, j.converted) for j in journeys]
    shares["incrementality"] = fit_incrementality(data).weights
    shares["incrementality_naive"] = fit_logistic(data).weights
    training = train_tenant(data, seed=seed)
    shares["chosen"] = training.methods[training.chosen].shares
    errors = {m: max(abs(s.get(c, 0.0) - truth[c]) for c in truth) for m, s in shares.items()}
    metrics = {m: r.metrics for m, r in training.methods.items()}
    return Evaluation(truth, shares, errors, training.chosen, metrics)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--plot", metavar="PNG", help="also draw each world's shares against the truth")
    args = ap.parse_args()
    worlds = {"with the high-intent confounder": SyntheticWorld(), "without it": SyntheticWorld(high_intent=0.0)}
    reports = {}
    for title, world in worlds.items():
        print(f"{title} ({args.persons} persons, seed {args.seed})")
        reports[title] = evaluate(world, args.persons, args.seed)
        print_report(reports[title])
        print()
    if args.plot:
        print(f"picture: {plot_reports(reports, args.plot)}")


PLOTTED = ("chosen", "last_touch", "linear", "first_touch", "markov", "shapley")


def plot_reports(reports: dict[str, Evaluation], out: str) -> str:
    """One panel per world: each channel's true share (black) next to each method's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(7 * len(reports), 4.5), sharey=True)
    for ax, (title, report) in zip(axes, reports.items(), strict=True):
        channels = sorted(report.truth, key=lambda c: -report.truth[c])
        width = 0.8 / (len(PLOTTED) + 1)
        xs = range(len(channels))
        ax.bar([x - 0.4 for x in xs], [report.truth[c] for c in channels], width, align="edge", color="black",
               label="truth")  # fmt: skip
        for k, method in enumerate(PLOTTED, start=1):
            name = f"chosen ({report.chosen})" if method == "chosen" else method
            ax.bar([x - 0.4 + k * width for x in xs], [report.shares[method].get(c, 0.0) for c in channels], width,
                   align="edge", label=f"{name}: max error {report.errors[method]:.2f}")  # fmt: skip
        ax.set_xticks(list(xs), channels)
        ax.set_title(title)
        ax.set_ylabel("credit share")
        ax.legend(fontsize=8)
    fig.suptitle("Credit share per channel against the known incremental truth (jobs.evaluate)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def print_report(report: Evaluation) -> None:
    """A table of shares and errors, best first, then the held-out metrics."""
    channels = sorted(report.truth)
    print(f"{'method':22}" + "".join(f"{c:>10}" for c in channels) + f"{'max error':>11}")
    print(f"{'truth':22}" + "".join(f"{report.truth[c]:10.3f}" for c in channels))
    for method, shares in sorted(report.shares.items(), key=lambda kv: report.errors[kv[0]]):
        row = "".join(f"{shares.get(c, 0.0):10.3f}" for c in channels)
        name = f"chosen: {report.chosen}" if method == "chosen" else method
        print(f"{name:22}{row}{report.errors[method]:11.3f}")
    held = ", ".join(f"{m} {v['log_loss']:.4f}/{v['auc']:.3f}" for m, v in report.metrics.items())
    print(f"held-out log loss/AUC: {held}")


if __name__ == "__main__":
    main()
