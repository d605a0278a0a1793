"""Deterministic held-out splits and predictive metrics for conversion probabilities.

Two splits, both the same for the same input and seed: ``split_by_index``
holds out exactly ``round(n * fraction)`` journeys picked by a seeded
permutation (what training on one batch needs); ``split_by_id`` holds out the
ids whose seeded BLAKE2b hash falls below ``fraction`` (an id keeps its side as
the data grows). Metrics take predicted ``P(convert)`` and the outcomes:
``log_loss`` (mean negative log-likelihood, predictions clipped to
``[eps, 1 - eps]``) and ``roc_auc`` (the chance a converting journey is ranked
above a non-converting one, ties counting half). Both are ``nan`` when
undefined (no journeys; for AUC, only one class).

>>> split_by_index(5, 0.4, seed=1).sum()
np.int64(2)
>>> roc_auc([0.9, 0.8, 0.3, 0.1], [True, False, True, False])
0.75
>>> round(log_loss([0.8, 0.25], [True, False]), 4)
0.2554
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["log_loss", "log_losses", "roc_auc", "split_by_id", "split_by_index"]


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1) (got {fraction}): the fits need training journeys")


def split_by_index(n: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of ``n`` items, ``True`` for the ``round(n * fraction)`` held out (at least one left to train).

    >>> split_by_index(6, 0.5, seed=0).tolist() == split_by_index(6, 0.5, seed=0).tolist()
    True
    """
    _check_fraction(fraction)
    held = min(round(n * fraction), max(n - 1, 0))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:held]] = True
    return mask


def split_by_id(ids: Iterable[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask, ``True`` for ids held out: a stable hash of ``seed`` and the id below ``fraction``.

    >>> split_by_id(["p1", "p2", "p3"], 0.5, seed=0).tolist() == split_by_id(["p1", "p2", "p3"], 0.5, 0).tolist()
    True
    """
    _check_fraction(fraction)
    salt = seed.to_bytes(8, "little", signed=True)
    cut = int(fraction * 2**64)
    return np.array(
        [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, salt=salt).digest(), "little") < cut for i in ids],
        dtype=bool,
    )


def log_losses(
    predicted: Sequence[float] | np.ndarray, converted: Sequence[bool] | np.ndarray, eps: float = 1e-15
) -> np.ndarray:
    """Each item's negative log-likelihood of its outcome, predictions clipped to ``[eps, 1 - eps]``.

    >>> log_losses([0.5, 0.9], [True, False]).round(3).tolist()
    [0.693, 2.303]
    """
    p = np.clip(np.asarray(predicted, dtype=float), eps, 1.0 - eps)
    y = np.asarray(converted, dtype=bool)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions for {y.size} outcomes: give one prediction per journey")
    return -np.where(y, np.log(p), np.log1p(-p))


def log_loss(
    predicted: Sequence[float] | np.ndarray, converted: Sequence[bool] | np.ndarray, eps: float = 1e-15
) -> float:
    """Mean of :func:`log_losses`; ``nan`` without items.

    >>> round(log_loss([1.0, 0.0], [False, True]), 1)  # sure and wrong: -log(1e-15), not infinity
    34.5
    """
    losses = log_losses(predicted, converted, eps)
    return float(losses.mean()) if losses.size else math.nan


def roc_auc(predicted: Sequence[float] | np.ndarray, converted: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve, from average ranks (Mann-Whitney U); tied scores count half.

    >>> roc_auc([0.5, 0.5, 0.5], [True, False, True])
    0.5
    """
    p = np.asarray(predicted, dtype=float)
    y = np.asarray(converted, dtype=bool)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions for {y.size} outcomes: give one prediction per journey")
    positives = int(y.sum())
    negatives = len(y) - positives
    if not positives or not negatives:
        return math.nan
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank, averaged over ties
    rank_sum = float(average_rank[inverse][y].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)
