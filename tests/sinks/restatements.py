"""Test helper: the sink rows of one scoring of a conversion, as the journey step emits them.

A restatement scores the conversion again with a higher ``revision`` and emits a
new full set of rows, possibly over fewer touches:

>>> first, restated = scoring("conv0", 0, ("a", "b", "c")), scoring("conv0", 1, ("a", "b"))
>>> len(first), len(restated)  # two models x touches, plus the conversion row
(7, 5)
>>> [round(sum(r.credit for r in restated if getattr(r, "model", "") == m), 9) for m in MODELS]
[1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence

from creditflow.events import ConversionRow, CreditRow, SinkRow, Utm

T0 = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z
MODELS = ("last_touch", "linear")
VALUE = 100.0


def scoring(
    conversion_id: str, revision: int, touches: Sequence[str], *, tenant_id: str = "t1", channel: str = "email"
) -> list[SinkRow]:
    """Credit rows of ``MODELS`` over ``touches`` (each model's credit sums to 1) and the conversion row."""
    rows: list[SinkRow] = []
    for model in MODELS:
        shares = [1 / len(touches)] * len(touches) if model == "linear" else [0.0] * (len(touches) - 1) + [1.0]
        for k, (touch, share) in enumerate(zip(touches, shares, strict=True)):
            rows.append(
                CreditRow(
                    tenant_id=tenant_id,
                    conversion_id=conversion_id,
                    person_id="p1",
                    model=model,
                    model_version=0,
                    channel=channel,
                    campaign_id="camp-1",
                    touch_event_id=touch,
                    touch_ts_ms=T0 - 60_000 * (len(touches) - k),
                    conversion_ts_ms=T0,
                    credit=share,
                    revenue_credit=share * VALUE,
                    revision=revision,
                )
            )
    rows.append(
        ConversionRow(
            tenant_id=tenant_id,
            conversion_id=conversion_id,
            person_id="p1",
            event_id=f"ev-{conversion_id}",
            conversion_ts_ms=T0,
            value=VALUE,
            currency="EUR",
            conversion_type="purchase",
            touch_count=len(touches),
            attributed=True,
            first_touch_channel=channel,
            last_touch_channel=channel,
            first_utm=Utm("newsletter", "email"),
            last_utm=Utm("newsletter", "email"),
            revision=revision,
        )
    )
    return rows
