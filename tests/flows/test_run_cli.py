"""`creditflow run` on a JSONL file, as real processes, against hand-computed credits."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pytest
from tests_support import query

pytestmark = pytest.mark.integration

DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
T1 = T0 + 3 * DAY


def line(eid: str, etype: str, ts: int, **fields: object) -> bytes:
    return orjson.dumps({"event_id": eid, "tenant_id": "acme", "event_type": etype, "timestamp": ts, **fields})


EVENTS = [
    line("a", "click", T0, user_id="u1", utm={"source": "newsletter", "medium": "email", "campaign": "jan"}),
    line("u2-imp", "impression", T1 - 1000, anonymous_id="x2", channel="display"),
    line("u2-a", "click", T1, anonymous_id="x2", click_ids={"ttclid": "tt1"}, campaign_id="tiktok-jan"),
    line("b", "click", T0 + 7 * DAY, user_id="u1", click_ids={"gclid": "g1"}, campaign_id="brand"),
    line("u2-b", "click", T1 + DAY, anonymous_id="x2", utm={"source": "newsletter", "medium": "email"}),
    line("u2-v", "conversion", T1 + 2 * DAY, anonymous_id="x2", conversion={"conversion_id": "o2", "value": 50}),
    line(
        "u2-v-again", "conversion", T1 + 2 * DAY + 5, anonymous_id="x2", conversion={"conversion_id": "o2", "value": 50}
    ),
    line("u2-v3", "conversion", T1 + 3 * DAY, anonymous_id="x2", conversion={"conversion_id": "o3", "value": 7}),
    line("c", "click", T0 + 14 * DAY, user_id="u1", channel="display", campaign_id="retarget"),
    line(
        "v",
        "conversion",
        T0 + 14 * DAY,
        user_id="u1",
        conversion={"conversion_id": "o1", "value": 140, "currency": "EUR"},
    ),
    b'{"event_id": "truncated", "tenant_id": "acme", "event_ty',
]

# Hand-computed credit per (conversion, model, touch); half-life 7 days.
w2, w1 = 2 ** (-2 / 7), 2 ** (-1 / 7)  # o2: touches 2 days and 1 day old
EXPECTED = {
    ("o1", "first_touch"): {"a": 1.0, "b": 0.0, "c": 0.0},
    ("o1", "last_touch"): {"a": 0.0, "b": 0.0, "c": 1.0},
    ("o1", "linear"): {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3},
    ("o1", "time_decay"): {"a": 1 / 7, "b": 2 / 7, "c": 4 / 7},
    ("o1", "position_based"): {"a": 0.4, "b": 0.2, "c": 0.4},
    ("o1", "data_driven"): {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3},
    ("o2", "first_touch"): {"u2-a": 1.0, "u2-b": 0.0},
    ("o2", "last_touch"): {"u2-a": 0.0, "u2-b": 1.0},
    ("o2", "linear"): {"u2-a": 0.5, "u2-b": 0.5},
    ("o2", "time_decay"): {"u2-a": w2 / (w1 + w2), "u2-b": w1 / (w1 + w2)},
    ("o2", "position_based"): {"u2-a": 0.5, "u2-b": 0.5},
    ("o2", "data_driven"): {"u2-a": 0.5, "u2-b": 0.5},
}
VALUES = {"o1": 140.0, "o2": 50.0}
CHANNELS = {"a": "email", "b": "paid_search", "c": "display", "u2-a": "paid_social", "u2-b": "email"}


def creditflow(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh working directory, so its default data dir (and recovery store) is new."""
    return subprocess.run(
        [sys.executable, "-m", "creditflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tempfile.mkdtemp(prefix="creditflow-cli-"),
    )


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("in") / "events.jsonl"
    path.write_bytes(b"\n".join(EVENTS) + b"\n")
    return path


@pytest.fixture(scope="module")
def person_partitioned_files(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same events in two files, each holding whole persons, as Kafka/Redis partitions by person would."""
    folder = tmp_path_factory.mktemp("parts")
    u2 = [e for e in EVENTS if b'"x2"' in e]
    (folder / "a.jsonl").write_bytes(b"\n".join(e for e in EVENTS if e not in u2) + b"\n")
    (folder / "b.jsonl").write_bytes(b"\n".join(u2) + b"\n")
    return f"{folder / 'a.jsonl'},{folder / 'b.jsonl'}"


def check_credits(dsn: str) -> None:
    rows = query(
        dsn,
        "SELECT conversion_id, model, touch_event_id, channel, credit, revenue_credit, model_version "
        "FROM attribution_credits FINAL",
    )
    got: dict[tuple[str, str], dict[str, float]] = {}
    for conv, model, touch, channel, credit, revenue, version in rows:
        got.setdefault((conv, model), {})[touch] = credit
        if touch in CHANNELS:
            assert channel == CHANNELS[touch], (touch, channel)
            assert revenue == pytest.approx(credit * VALUES[conv], abs=1e-9)
        assert version == 0
    for key, expected in EXPECTED.items():
        assert got[key] == pytest.approx(expected, abs=1e-12), key
    # o3 had no touch left: one unattributed row per model holding the value.
    assert {m: t for (c, m), t in got.items() if c == "o3"} == {m: {"": 1.0} for (_, m) in EXPECTED if _ == "o1"}
    (count,) = query(dsn, "SELECT count() FROM attribution_credits")[0]
    assert count == 3 * 6 + 2 * 6 + 6, "no row may be written twice (count without FINAL)"
    conversions = query(
        dsn, "SELECT conversion_id, attributed, first_utm_source FROM conversions ORDER BY conversion_id"
    )
    assert conversions == [["o1", 1, "newsletter"], ["o2", 1, "newsletter"], ["o3", 0, "newsletter"]]
    dead = query(dsn, "SELECT reason, event_id FROM dead_letters ORDER BY reason")
    assert dead == [["duplicate_conversion", "u2-v-again"], ["parse_error", ""]]


def test_run_on_jsonl_writes_hand_computed_credits(events_file: Path, tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'ch'}"
    done = creditflow("run", "--source", f"file:{events_file}", "--clickhouse", dsn)
    assert done.returncode == 0, done.stderr
    check_credits(dsn)
    assert "Conversions credited per channel and model" in done.stdout and "paid_social" in done.stdout


def test_two_processes_write_the_same_credits(person_partitioned_files: str, tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'ch'}"
    done = creditflow(
        "run", "--source", f"file:{person_partitioned_files}", "--processes", "2", "--clickhouse", dsn, "--no-summary"
    )
    assert done.returncode == 0, done.stderr
    check_credits(dsn)


def test_bad_source_is_refused_with_a_message() -> None:
    done = creditflow("run", "--source", "ftp://nowhere")
    assert done.returncode == 2
    assert "unknown --source" in done.stderr


def test_rerun_with_recovery_resumes_after_what_was_read(events_file: Path, tmp_path: Path) -> None:
    data = tmp_path / "events.jsonl"
    data.write_bytes(events_file.read_bytes())
    dsn = f"chdb://{tmp_path / 'ch'}"
    args = [
        "run",
        "--source",
        f"file:{data}",
        "--clickhouse",
        dsn,
        "--recovery-dir",
        str(tmp_path / "rec"),
        "--no-summary",
    ]
    first = creditflow(*args)
    assert first.returncode == 0, first.stderr
    assert f"run totals: {len(EVENTS) - 1} events decoded" in first.stderr
    with data.open("ab") as f:  # new traffic arrives after the first run
        f.write(line("d", "click", T0 + 20 * DAY, user_id="u1", channel="email") + b"\n")
        f.write(
            line("w", "conversion", T0 + 21 * DAY, user_id="u1", conversion={"conversion_id": "o4", "value": 1}) + b"\n"
        )
    second = creditflow(*args)
    assert second.returncode == 0, second.stderr
    assert "run totals: 2 events decoded" in second.stderr, second.stderr
    check_credits_from_o1_to_o3 = query(dsn, "SELECT count() FROM attribution_credits WHERE conversion_id != 'o4'")
    assert check_credits_from_o1_to_o3 == [[3 * 6 + 2 * 6 + 6]]
    assert query(
        dsn, "SELECT touch_event_id, credit FROM attribution_credits WHERE model = 'linear' AND conversion_id = 'o4'"
    ) == [["d", 1.0]]


def test_avro_container_file_runs_through_the_same_path(tmp_path: Path) -> None:
    import fastavro

    from schemas.registry import LATEST_VERSION, load_schema

    def rec(eid: str, etype: str, ts: int, **fields: object) -> dict:
        return {"event_id": eid, "tenant_id": "acme", "event_type": etype, "timestamp": ts, **fields}

    path = tmp_path / "events.avro"
    with path.open("wb") as f:
        fastavro.writer(
            f,
            load_schema(LATEST_VERSION),
            [
                rec("a", "click", T0, user_id="u1", channel="email"),
                rec("b", "click", T0 + DAY, user_id="u1", channel="display"),
                rec("v", "conversion", T0 + 2 * DAY, user_id="u1", conversion={"conversion_id": "o1", "value": 10.0}),
            ],
        )
    dsn = f"chdb://{tmp_path / 'ch'}"
    done = creditflow("run", "--source", f"file:{path}", "--clickhouse", dsn, "--no-summary")
    assert done.returncode == 0, done.stderr
    rows = query(
        dsn, "SELECT touch_event_id, credit FROM attribution_credits WHERE model = 'position_based' ORDER BY 1"
    )
    assert rows == [["a", 0.5], ["b", 0.5]]


def test_a_store_of_another_state_layout_is_refused_and_fresh_state_moves_it_aside(
    events_file: Path, tmp_path: Path
) -> None:
    args = ["run", "--source", f"file:{events_file}", "--data-dir", str(tmp_path), "--no-summary"]
    assert creditflow(*args).returncode == 0
    sidecar = tmp_path / "recovery" / "creditflow-state.json"
    recorded = json.loads(sidecar.read_text())
    recorded["steps"]["creditflow.attribute.journey"]["layout"] = 0  # as if written by an older release
    sidecar.write_text(json.dumps(recorded))

    refused = creditflow(*args)
    assert refused.returncode == 2
    assert "creditflow.attribute.journey" in refused.stderr and "--fresh-state" in refused.stderr

    fresh = creditflow(*args, "--fresh-state")
    assert fresh.returncode == 0, fresh.stderr
    assert "moved recovery store" in fresh.stderr
    assert [p.name.split(".old-")[0] for p in tmp_path.glob("recovery.old-*")] == ["recovery"]
    assert f"run totals: {len(EVENTS) - 1} events decoded" in fresh.stderr  # started from the beginning


def test_resuming_with_another_source_is_refused_with_the_partitions_named(
    person_partitioned_files: str, events_file: Path, tmp_path: Path
) -> None:
    args = ["--data-dir", str(tmp_path), "--no-summary"]
    assert creditflow("run", "--source", f"file:{person_partitioned_files}", *args).returncode == 0
    other = creditflow("run", "--source", f"file:{events_file}", *args)
    assert other.returncode == 2
    assert "a.jsonl#0" in other.stderr and "same --source" in other.stderr and "--fresh-state" in other.stderr
