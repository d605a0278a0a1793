"""PII hashing: normalization, per-tenant salts, idempotence, key files, and dead-letter scrubbing."""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import stat
import threading
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditflow.errors import CreditflowError
from creditflow.pii import (
    KEY_ENV_VAR,
    PII_TRAIT_KEYS,
    PiiHasher,
    PiiKeyError,
    is_hashed,
    load_or_create_key,
    normalize_email,
    normalize_phone,
    pii_hasher_from,
    pii_kind,
    scrub_payload,
    scrub_text,
)
from schemas.decode import encode_avro

KEY = bytes(range(32))
H = PiiHasher(KEY)
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- hashing


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Ann@Example.COM", "ann@example.com"),
        ("  ann@example.com\n", "ann@example.com"),
        ("\tANN@EXAMPLE.COM ", "ann@example.com"),
    ],
)
def test_email_normalization(raw: str, normalized: str) -> None:
    assert normalize_email(raw) == normalized
    assert H.hash_email("t", raw) == H.hash_email("t", normalized)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("+1 (555) 010-0100", "+15550100100"),
        (" +49 30 1234567 ", "+49301234567"),
        ("555.0100", "5550100"),
        ("(030) 123-4567", "0301234567"),
        ("n/a", ""),
        ("", ""),
    ],
)
def test_phone_normalization(raw: str, normalized: str) -> None:
    assert normalize_phone(raw) == normalized
    assert H.hash_phone("t", raw) == H.hash_phone("t", normalized)


def test_a_leading_plus_is_part_of_the_phone_number() -> None:
    assert H.hash_phone("t", "+15550100") != H.hash_phone("t", "15550100")


def test_hash_format_is_the_documented_hmac() -> None:
    salt = hmac.new(KEY, b"creditflow-tenant:acme", hashlib.sha256).digest()
    assert H.tenant_salt("acme") == salt
    expected = "h1:" + hmac.new(salt, b"email:ann@example.com", hashlib.sha256).hexdigest()[:32]
    assert H.hash_email("acme", " Ann@example.com") == expected == H.hash_value("acme", "email", "ann@example.com")
    assert is_hashed(expected) and not is_hashed(expected.upper()) and not is_hashed(expected[:-1])


def test_tenants_keys_and_kinds_give_different_hashes() -> None:
    assert H.tenant_salt("acme") != H.tenant_salt("globex")
    assert H.hash_email("acme", "a@x.com") != H.hash_email("globex", "a@x.com")
    assert H.hash_email("acme", "a@x.com") != PiiHasher(KEY[::-1]).hash_email("acme", "a@x.com")
    assert H.hash_email("acme", "a@x.com") != PiiHasher.unkeyed().hash_email("acme", "a@x.com")
    assert H.hash_value("acme", "email", "5550100") != H.hash_value("acme", "phone", "5550100")


def test_empty_values_stay_empty() -> None:
    assert H.hash_email("t", "  ") == "" == H.hash_phone("t", "no digits")


@PROPS
@given(value=st.text(max_size=60), tenant=st.text(min_size=1, max_size=20), other=st.text(min_size=1, max_size=20))
def test_hashing_is_idempotent(value: str, tenant: str, other: str) -> None:
    for hash_it in (H.hash_email, H.hash_phone):
        once = hash_it(tenant, value)
        assert hash_it(tenant, once) == once
        assert hash_it(other, once) == once  # a hash is never hashed again, whatever the tenant
        assert once == "" or is_hashed(once)
        assert H.hash_traits(tenant, H.hash_traits(tenant, {"email": value})) == H.hash_traits(tenant, {"email": value})


def test_the_salt_cache_is_bounded() -> None:
    h = PiiHasher(KEY)
    first = h.tenant_salt("t0")
    for i in range(5000):
        h.tenant_salt(f"t{i}")
    assert len(h._salts) <= 4096
    assert h.tenant_salt("t0") == first


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("email", "email"),
        ("Email", "email"),
        ("email_address", "email"),
        ("emailAddress", "email"),
        ("e-mail", "email"),
        ("phone", "phone"),
        ("phone_number", "phone"),
        ("PhoneNumber", "phone"),
        ("mobile", "phone"),
        ("name", None),
        ("plan", None),
        ("", None),
    ],
)
def test_pii_keys(key: str, kind: str | None) -> None:
    assert pii_kind(key) == kind


def test_hash_traits_hashes_only_pii_keys_of_any_type() -> None:
    out = H.hash_traits("t", {"email": "A@x.com", "phone_number": 5550100, "plan": "pro", "mobile": None})
    assert out["email"] == H.hash_email("t", "a@x.com")
    assert out["phone_number"] == H.hash_phone("t", "5550100")
    assert out["plan"] == "pro" and out["mobile"] is None


def test_hash_nested_walks_objects_and_lists_without_modifying_them() -> None:
    md = {"page": "/x", "customer": {"Email": "a@x.com", "tags": [{"phone": "+1 555 0100"}]}}
    before = orjson.dumps(md)
    out = H.hash_nested("t", md)
    assert orjson.dumps(md) == before
    assert out["customer"]["Email"] == H.hash_email("t", "a@x.com")
    assert out["customer"]["tags"][0]["phone"] == H.hash_phone("t", "+15550100")
    clean = {"page": "/x", "ab": [1, 2]}
    assert H.hash_nested("t", clean) is clean


def test_hasher_pickles_compares_and_never_shows_its_key() -> None:
    assert pickle.loads(pickle.dumps(H)) == H
    assert PiiHasher(KEY) == H != PiiHasher.unkeyed()
    assert KEY.hex() not in repr(H) and H.fingerprint in repr(H)
    assert repr(PiiHasher.unkeyed()) == "PiiHasher(unkeyed)" and PiiHasher.unkeyed().is_unkeyed


def test_short_keys_are_refused() -> None:
    with pytest.raises(PiiKeyError, match="at least 16 bytes"):
        PiiHasher(b"short")
    assert issubclass(PiiKeyError, CreditflowError)
    assert set(PII_TRAIT_KEYS.values()) == {"email", "phone"}


# ---------------------------------------------------------------- keys


def test_key_file_is_created_with_mode_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "pii.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert bytes.fromhex(path.read_text()) == key
    assert load_or_create_key(tmp_path / "other.key") != key
    assert [p.name for p in path.parent.iterdir()] == ["pii.key"]  # no temporary file left behind


def test_processes_starting_at_once_share_one_key(tmp_path: Path) -> None:
    path = tmp_path / "pii.key"
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(load_or_create_key(path))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 16 and len(set(keys)) == 1


@pytest.mark.parametrize(("content", "problem"), [("abcd\n", "holds 2 bytes"), ("not hex at all", "not hold a hex")])
def test_unusable_key_files_are_refused_with_the_fix(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "pii.key"
    path.write_text(content)
    with pytest.raises(PiiKeyError, match=problem) as err:
        load_or_create_key(path)
    assert "token_hex" in str(err.value) and str(path) in str(err.value)
    assert path.read_text() == content  # never overwritten


def test_env_var_takes_precedence_over_the_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pii.key"
    assert pii_hasher_from(path, {KEY_ENV_VAR: KEY.hex()}) == H
    assert not path.exists()  # the file is not even created
    monkeypatch.setenv(KEY_ENV_VAR, KEY.hex().upper())
    assert pii_hasher_from(path) == H
    monkeypatch.delenv(KEY_ENV_VAR)
    from_file = pii_hasher_from(path)
    assert from_file == PiiHasher(load_or_create_key(path)) != H


def test_without_key_file_or_env_var_the_hasher_is_unkeyed() -> None:
    assert pii_hasher_from(None, {}).is_unkeyed


@pytest.mark.parametrize(("value", "problem"), [("zz", "not hex"), ("00ff", "holds 2 bytes")])
def test_bad_env_var_is_refused(tmp_path: Path, value: str, problem: str) -> None:
    with pytest.raises(PiiKeyError, match=problem):
        pii_hasher_from(tmp_path / "pii.key", {KEY_ENV_VAR: value})


# ---------------------------------------------------------------- scrubbing

EMAIL = "Ann.Lee+promo@example.co.uk"
PHONE = "+1 (555) 010-0100"
IP4 = "203.0.113.7"
IP6 = "2001:db8::7"
PII = (EMAIL, PHONE, IP4, IP6, "5550100100")


def no_pii(out: bytes, *values: str) -> None:
    for v in values or PII:
        assert v.encode() not in out, (v, out)


def test_json_payload_hashes_traits_and_drops_the_ip() -> None:
    raw = orjson.dumps(
        {
            "event_id": "ord-1234567",
            "tenant_id": "acme",
            "timestamp": "2026-01-01T00:00:00Z",
            "traits": {"email": EMAIL, "phone_number": "5550100100", "plan": "pro"},
            "context": {"ip": IP4, "user_agent": "Mozilla/5.0 Chrome/120.0.0.0"},
            "metadata": {"note": f"call {PHONE} or mail {EMAIL} from {IP6}"},
        }
    )
    out = scrub_payload(raw, H, "acme")
    no_pii(out)
    obj = orjson.loads(out)
    assert obj["traits"] == {
        "email": H.hash_email("acme", EMAIL),
        "phone_number": H.hash_phone("acme", "5550100100"),
        "plan": "pro",
    }
    assert obj["context"] == {"ip": "[ip]", "user_agent": "Mozilla/5.0 Chrome/120.0.0.0"}
    assert obj["metadata"]["note"] == "call [phone] or mail [email] from [ip]"
    # what is not personal data stays as it was (ids and dates hold long digit runs)
    assert (obj["event_id"], obj["timestamp"]) == ("ord-1234567", "2026-01-01T00:00:00Z")


def test_json_payload_without_pii_is_kept_byte_for_byte() -> None:
    raw = b'{ "event_id" : "e1", "timestamp": 1767225600000, "context": {"ip": ""} }'
    assert scrub_payload(raw, H, "t") == raw


def test_the_payloads_own_tenant_salts_when_none_is_given() -> None:
    out = orjson.loads(scrub_payload(orjson.dumps({"tenant_id": "acme", "traits": {"email": EMAIL}}), H, ""))
    assert out["traits"]["email"] == H.hash_email("acme", EMAIL)


def test_source_error_payloads_are_scrubbed_inside_their_strings() -> None:
    event = orjson.dumps({"tenant_id": "acme", "traits": {"email": EMAIL, "phone": "5550100100"}}).decode()
    raw = orjson.dumps({"_source_error": "bad format header", "value": event, "fields": {"data": event}})
    out = scrub_payload(raw, H, "")
    no_pii(out)
    assert orjson.loads(out)["_source_error"] == "bad format header"


@pytest.mark.parametrize(
    "raw",
    [
        f'{{"event_id": "e1", "traits": {{"email": "{EMAIL}", "phone": "5550100100"}}, '
        f'"context": {{"ip": "{IP4}"'.encode(),
        f'{{"traits": {{"phone": 5550100100, "e-mail": "{EMAIL}'.encode(),
        f"garbage {EMAIL}, {PHONE}; {IP4} / [{IP6}]:443 and 555-010-0100 \xff\x00".encode("latin-1"),
        b"\x02\x1a" + EMAIL.encode() + b"\x16" + b"5550100100" + b"\x00" + IP4.encode(),  # Avro-like
    ],
)
def test_non_json_payloads_are_scrubbed_by_pattern(raw: bytes) -> None:
    out = scrub_payload(raw, H, "t")
    no_pii(out)
    assert out != raw and len(out) <= len(raw) + 32


def test_timestamps_and_amounts_of_broken_json_survive() -> None:
    raw = b'{"timestamp": 1767225600000, "ts": "2026-01-01T02:00:00+02:00", "value": 1234567.5, "x'
    assert scrub_payload(raw, H, "t") == raw


def test_avro_payload_is_scrubbed() -> None:
    raw = encode_avro(
        {
            "event_id": "e1",
            "tenant_id": "acme",
            "event_type": "identify",
            "timestamp": 17,
            "user_id": "u1",
            "traits": {"email": EMAIL, "phone": "5550100100"},
            "context": {"ip": IP4, "user_agent": "", "device_type": "", "country": ""},
        }
    )
    no_pii(scrub_payload(raw, H, "acme"), EMAIL, "5550100100", IP4)


def test_details_lose_emails_and_ips_but_keep_numbers() -> None:
    assert scrub_text(f"x {EMAIL} y {IP4} now 1767225600000") == "x [email] y [ip] now 1767225600000"


def test_scrubbing_is_fast_on_long_runs() -> None:
    import time

    started = time.perf_counter()
    for raw in (b"a" * 40_000, b"1 " * 20_000, b"a@" * 20_000, b'"a":"' * 8000, b"1." * 20_000):
        assert isinstance(scrub_payload(raw, H, "t"), bytes)  # markers may be longer than what they replace
    assert time.perf_counter() - started < 2.0


separators = st.sampled_from([" ", "-", ".", ""])
phones = (
    st.lists(st.text("0123456789", min_size=2, max_size=4), min_size=3, max_size=4)
    .filter(lambda groups: 7 <= sum(map(len, groups)) <= 15)
    .flatmap(lambda groups: st.builds(lambda sep: "+" + sep.join(groups), separators))
)
ips = st.ip_addresses().map(str)
pii_values = st.one_of(st.emails(), phones, ips)
filler = st.text(st.characters(codec="utf-8", exclude_characters='"\\'), max_size=30)


@PROPS
@given(value=pii_values, before=filler, after=filler, cut=st.integers(0, 400), key=st.sampled_from(["note", "email"]))
def test_no_pii_survives_any_shape(value: str, before: str, after: str, cut: int, key: str) -> None:
    text = f"{before} {value} {after}"
    event = {"tenant_id": "acme", "traits": {"phone": value, key: value}, "context": {"ip": value}, "x": text}
    shapes = [
        orjson.dumps(event),
        orjson.dumps(event)[: len(orjson.dumps(event)) - cut],  # broken JSON
        text.encode(),
        orjson.dumps({"_source_error": "e", "value": orjson.dumps(event).decode()}),
    ]
    for raw in shapes:
        out = scrub_payload(raw, H, "acme")
        assert value.encode() not in out, (raw, out)


@PROPS
@given(raw=st.binary(max_size=600) | st.text(max_size=300).map(str.encode), tenant=st.text(max_size=5))
def test_scrub_payload_never_raises(raw: bytes, tenant: str) -> None:
    assert isinstance(scrub_payload(raw, H, tenant), bytes)


@pytest.mark.parametrize("raw", [None, 12, object(), "text ann@x.com", bytearray(b"a@b.co"), memoryview(b"1.2.3.4")])
def test_scrub_payload_takes_anything(raw: object) -> None:
    out = scrub_payload(raw, H, "t")  # type: ignore[arg-type]
    assert isinstance(out, bytes) and b"@" not in out and b"1.2.3.4" not in out


def test_unreadable_or_uncreatable_key_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PiiKeyError, match="cannot read"):
        load_or_create_key(tmp_path)  # a directory
    (tmp_path / "file").write_text("")
    with pytest.raises(PiiKeyError, match="cannot (read|create)"):
        load_or_create_key(tmp_path / "file" / "pii.key")
    readonly = tmp_path / "ro"
    readonly.mkdir(mode=0o500)
    if not os.access(readonly, os.W_OK):  # root may write anywhere
        with pytest.raises(PiiKeyError, match="cannot create"):
            load_or_create_key(readonly / "pii.key")


# ---------------------------------------------------------------- how a run finds its key


def test_run_defaults_to_the_key_file_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from creditflow.cli import build_parser, run_settings_from_args

    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    args = build_parser().parse_args(["run", "--source", "file:e.jsonl", "--data-dir", str(tmp_path / "d")])
    settings = run_settings_from_args(args, args.source)
    assert settings.pii_key_file == str(tmp_path / "d" / "pii.key")
    pii = settings.flow_settings(live=False).pii
    assert pii == PiiHasher(load_or_create_key(tmp_path / "d" / "pii.key")) and not pii.is_unkeyed
    other = tmp_path / "other.key"
    args = build_parser().parse_args(["run", "--source", "file:e.jsonl", "--pii-key-file", str(other)])
    assert run_settings_from_args(args, args.source).pii_key_file == str(other)
