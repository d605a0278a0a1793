"""Tenant config files: defaults, overrides, and errors that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from creditflow.config import ChannelRule, ConfigError, TenantConfig, TenantConfigs


def test_toml_overrides_apply_on_top_of_defaults(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text(
        """
[defaults]
lookback_days = 14

[tenants.acme]
view_through = true
own_domains = ["acme.com"]
[[tenants.acme.channel_rules]]
channel = "partner"
utm_source = "^partnerco$"
"""
    )
    cfgs = TenantConfigs.load(path)
    assert cfgs.for_tenant("other").lookback_days == 14
    acme = cfgs.for_tenant("acme")
    assert (acme.lookback_days, acme.view_through, acme.own_domains) == (14, True, ("acme.com",))
    assert acme.channel_rules == (ChannelRule(channel="partner", utm_source="^partnerco$"),)


def test_json_config_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "tenants.json"
    path.write_text('{"tenants": {"acme": {"kpi_model": "linear"}}}')
    assert TenantConfigs.load(path).for_tenant("acme").kpi_model == "linear"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tenants": {"acme": {"lookbak_days": 3}}}, "unknown setting"),
        ({"tenants": {"acme": {"half_life_days": -1}}}, "half_life_days must be > 0"),
        ({"defaults": {"models": ["last_touch", "magic"]}}, "unknown model"),
        ({"defaults": {"kpi_model": "linear", "models": ["last_touch"]}}, "must also be listed"),
        ({"defaults": {"position_first": 0.7, "position_last": 0.7}}, "sum to at most 1"),
        ({"tenant": {}}, "unknown section"),
        ({"tenants": {"acme": {"channel_rules": [{"chanel": "x"}]}}}, "bad channel rule"),
    ],
)
def test_bad_settings_are_refused_with_the_place_and_fix(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TenantConfigs.from_dict(data)


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        TenantConfigs.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[defaults\n")
    with pytest.raises(ConfigError, match="not valid toml"):
        TenantConfigs.load(bad)


def test_lookbacks_by_touch_type() -> None:
    cfg = TenantConfig(lookback_days=30, impression_lookback_days=1)
    assert cfg.lookback_ms("click") == 30 * 86_400_000
    assert cfg.lookback_ms("page_view") == 30 * 86_400_000
    assert cfg.lookback_ms("impression") == 86_400_000
