"""The retrain job's pure parts: archive rows to training paths, settings, the chosen weights record."""

from __future__ import annotations

import argparse
import dataclasses

import pyarrow as pa
import pytest

from creditflow.errors import CreditflowError
from creditflow.model_weights import model_weights_from_json
from jobs.retrain import RetrainSettings, add_arguments, journeys_of, settings_from_args, weights_of
from jobs.synthetic import SyntheticWorld, generate
from jobs.train import train_tenant

DAY = 86_400_000


def table(rows: list[tuple[str, str, list[tuple[str, int]]]]) -> pa.Table:
    ts = pa.timestamp("ms", tz="UTC")
    return pa.table(
        {
            "journey_id": [r[0] for r in rows],
            "outcome": [r[1] for r in rows],
            "closed_at": pa.array([max([t for _, t in r[2]], default=0) for r in rows], ts),
            "touches": pa.array(
                [[{"channel": c, "ts": t} for c, t in r[2]] for r in rows],
                pa.list_(pa.struct([("channel", pa.string()), ("ts", ts)])),
            ),
        }
    )


def test_paths_do_not_depend_on_the_order_files_were_read_in() -> None:
    rows = [(f"j{i:03d}", ("converted", "expired")[i % 2], [("email", i * DAY), ("search", (i + 1) * DAY)])
            for i in range(50)]  # fmt: skip
    assert journeys_of(table(rows)) == journeys_of(table(list(reversed(rows))))


def test_ages_count_back_from_the_last_touch_whatever_the_outcome() -> None:
    got = journeys_of(table([("a", "converted", [("email", 0), ("search", 3 * DAY)]),
                             ("b", "expired", [("email", 0), ("search", 3 * DAY)])]))  # fmt: skip
    assert got == [([("email", 3.0), ("search", 0.0)], True), ([("email", 3.0), ("search", 0.0)], False)]


def test_untouched_and_twice_written_journeys_are_left_out() -> None:
    got = journeys_of(table([("a", "converted", []), ("b", "expired", [("x", 0)]), ("b", "expired", [("x", 0)])]))
    assert got == [([("x", 0.0)], False)]


def test_weights_of_carries_the_chosen_method_and_every_methods_metrics() -> None:
    journeys = [(list(j.touches), j.converted) for j in generate(SyntheticWorld(), persons=3000, seed=2) if j.touches]
    training = train_tenant(journeys, seed=1)
    t = table([("a", "converted", [("email", 5 * DAY)]), ("b", "expired", [("email", 9 * DAY)])])
    w = weights_of("acme", training, t, trained_at_ms=42)
    assert w.method == training.chosen and w.trained_at_ms == 42
    assert (w.window_start_ms, w.window_end_ms) == (5 * DAY, 9 * DAY)
    assert {f"{m}.log_loss" for m in training.methods} <= set(w.metrics)
    numbered = dataclasses.replace(w, version=1)  # publish() numbers it
    assert model_weights_from_json(numbered.to_json()) == numbered


def parse(*argv: str) -> RetrainSettings:
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    return settings_from_args(ap.parse_args(list(argv)))


def test_settings_need_a_redis_to_publish_to_or_a_dry_run() -> None:
    with pytest.raises(CreditflowError, match="--redis URL"):
        parse("--archive", "/tmp/a")
    assert parse("--archive", "/tmp/a", "--dry-run").redis_url is None
    s = parse("--archive", "/tmp/a", "--redis", "redis://h:1/0", "--tenants", "acme,globex", "--since", "2026-01-01")
    assert (s.redis_url, s.tenants, s.start_date) == ("redis://h:1/0", ("acme", "globex"), "2026-01-01")


@pytest.mark.parametrize(("field", "value", "message"), [("holdout_fraction", 1.0, "--holdout"),
                                                           ("min_journeys", 0, "--min-journeys")])  # fmt: skip
def test_settings_refuse_values_that_cannot_train(field: str, value: float, message: str) -> None:
    with pytest.raises(CreditflowError, match=message):
        RetrainSettings("/tmp/a", **{field: value})  # type: ignore[arg-type]


def test_a_dry_run_on_an_empty_archive_says_there_is_nothing(tmp_path, capsys) -> None:
    from jobs.retrain import main

    assert main(["--archive", str(tmp_path), "--dry-run", "--tenants", "acme"]) == 1
    assert "no archived journeys in the window" in capsys.readouterr().out


def test_a_tenant_with_only_converting_journeys_is_skipped_with_the_reason() -> None:
    from jobs.retrain import _train_one

    rows = [(f"j{i}", "converted", [("email", i * DAY)]) for i in range(200)]
    report, weights = _train_one("acme", RetrainSettings("/tmp/a"), table(rows))
    assert weights is None and "no non-converting journey" in report.status and "idle_ttl_days" in report.status


def test_a_path_archived_unconverted_then_expired_counts_once() -> None:
    t = table([("p:unconverted:5", "unconverted", [("x", 5)]), ("p:expired:5", "expired", [("x", 5)]),
               ("q:expired:5", "expired", [("x", 5)]), ("p:converted:o", "converted", [("x", 5)])])  # fmt: skip
    t = t.append_column("person_id", pa.array(["p", "p", "q", "p"]))
    got = journeys_of(t)
    assert sorted(c for _, c in got) == [False, False, True]  # p's idle path once, q's, p's conversion


def with_revisions(t: pa.Table, revisions: list[int | None]) -> pa.Table:
    return t.append_column("revision", pa.array(revisions, pa.int32()))


def test_a_restated_conversion_trains_on_its_latest_path_whatever_the_read_order() -> None:
    rows = [("converted:o1", "converted", [("email", 0)]),  # revision 0: scored before a touch arrived late
            ("converted:o1", "converted", [("email", 0), ("search", DAY)]),  # revision 2, the latest
            ("converted:o1", "converted", [("social", 0), ("email", DAY)]),  # revision 1
            ("p:expired:9", "expired", [("display", 0)])]  # fmt: skip
    revisions: list[int | None] = [0, 2, 1, 0]
    expected = [([("email", 1.0), ("search", 0.0)], True), ([("display", 0.0)], False)]
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]):
        t = with_revisions(table([rows[i] for i in order]), [revisions[i] for i in order])
        assert journeys_of(t) == expected, order


def test_a_missing_or_null_revision_is_revision_0() -> None:
    """Files written before revisions existed: no column (one file), or nulls (read with others)."""
    old = ("converted:o1", "converted", [("email", 0)])
    new = ("converted:o1", "converted", [("email", 0), ("search", DAY)])
    assert journeys_of(table([old])) == [([("email", 0.0)], True)]
    assert journeys_of(with_revisions(table([old, new]), [None, 1])) == [([("email", 1.0), ("search", 0.0)], True)]
    assert journeys_of(with_revisions(table([new, old]), [1, None])) == [([("email", 1.0), ("search", 0.0)], True)]
