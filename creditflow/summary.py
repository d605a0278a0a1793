"""The per-channel, per-model summary printed at the end of a run, read back from ClickHouse.

Credits and conversions are read through ``attribution_credits_latest`` and
``conversions_latest`` (each conversion at its highest revision), so a
conversion restated by late events counts once.
"""

from __future__ import annotations

from typing import Any

from creditflow.config import MODELS
from creditflow.events import UNATTRIBUTED_CHANNEL


def credit_by_channel(client: Any) -> dict[str, dict[str, tuple[float, float]]]:
    """channel -> model -> (conversions credited, revenue credited), each conversion at its latest revision."""
    rows = client.query(
        "SELECT channel, model, sum(credit), sum(revenue_credit) FROM attribution_credits_latest "
        "GROUP BY channel, model ORDER BY channel, model"
    ).result_rows
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for channel, model, credit, revenue in rows:
        out.setdefault(channel, {})[model] = (float(credit), float(revenue))
    return out


def _table(title: str, table: dict[str, dict[str, tuple[float, float]]], models: list[str], idx: int) -> list[str]:
    header = f"{'channel':<16}" + "".join(f"{m:>15}" for m in models)
    lines = [title, header, "-" * len(header)]

    def order(channel: str) -> tuple[bool, float]:
        return channel == UNATTRIBUTED_CHANNEL, -table[channel].get("last_touch", (0.0, 0.0))[idx]

    for channel in sorted(table, key=order):
        cells = "".join(f"{table[channel].get(m, (0.0, 0.0))[idx]:>15,.1f}" for m in models)
        lines.append(f"{channel:<16}{cells}")
    return lines


def render_summary(client: Any) -> str:
    """A plain-text report: credited conversions and revenue per channel and model, totals, dead letters."""
    table = credit_by_channel(client)
    models = [m for m in MODELS if any(m in by_model for by_model in table.values())]
    lines = _table("Conversions credited per channel and model", table, models, 0)
    lines += [""] + _table("Revenue credited per channel and model", table, models, 1)
    ((conversions, attributed, revenue),) = client.query(
        "SELECT count(), countIf(attributed = 1), sum(value) FROM conversions_latest"
    ).result_rows
    ((kpi_rows, clicks, cost),) = client.query(
        "SELECT count(), sum(clicks), sum(cost) FROM kpi_windows_latest"
    ).result_rows
    dead = client.query(
        "SELECT reason, count() FROM dead_letters FINAL GROUP BY reason ORDER BY count() DESC"
    ).result_rows
    ((dd_version,),) = client.query(
        "SELECT max(model_version) FROM attribution_credits WHERE model = 'data_driven'"
    ).result_rows
    lines += [
        "",
        "data_driven: "
        + (
            f"trained weights up to version {dd_version}"
            if dd_version
            else "no trained weights yet (version 0 = linear)"
        ),
        f"conversions: {conversions} ({attributed} attributed), revenue {float(revenue or 0):,.2f}",
        f"KPI windows: {kpi_rows} rows, {int(clicks or 0)} clicks, cost {float(cost or 0):,.2f}",
        "dead letters: " + (", ".join(f"{r} {n}" for r, n in dead) if dead else "none"),
    ]
    return "\n".join(lines)
