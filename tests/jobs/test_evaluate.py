"""Evaluation against known effects: the data-driven models beat last touch when nothing confounds."""

from __future__ import annotations

import pytest

from jobs.evaluate import evaluate, rule_shares
from jobs.synthetic import Journey, SyntheticWorld, generate, truth_shares


def test_truth_shares_follow_effects_and_exposure() -> None:
    world = SyntheticWorld()
    journeys = generate(world, persons=5000, seed=4)
    truth = truth_shares(world, journeys)
    assert sum(truth.values()) == pytest.approx(1.0)
    assert truth["direct"] == 0.0  # no incremental effect
    assert truth["search"] > truth["email"] > truth["display"]


def test_without_a_confounder_data_driven_models_beat_last_touch() -> None:
    report = evaluate(SyntheticWorld(high_intent=0.0), persons=30_000, seed=1)
    assert report.errors["shapley"] < report.errors["last_touch"] / 2
    assert report.errors["incrementality"] < report.errors["last_touch"]


def test_the_confounder_makes_last_touch_over_credit_direct() -> None:
    report = evaluate(SyntheticWorld(), persons=30_000, seed=1)
    assert report.shares["last_touch"]["direct"] > 0.15 > report.truth["direct"]


def test_rule_shares_split_credit_per_rule() -> None:
    journeys = [Journey((("a", 2.0), ("b", 1.0)), True, False), Journey((("b", 0.0),), False, False)]
    assert rule_shares(journeys, "first_touch") == {"a": 1.0}
    assert rule_shares(journeys, "last_touch") == {"b": 1.0}
    assert rule_shares(journeys, "linear") == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError, match="unknown rule"):
        rule_shares(journeys, "u_shaped")
