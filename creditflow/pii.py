"""Hash emails and phone numbers per tenant; scrub dead-letter payloads.

The decoder (``schemas.decode``) hashes the values under PII keys (``PII_TRAIT_KEYS``)
in the traits and metadata of every event before it enters state or reaches a sink,
and scrubs the raw bytes of every dead letter (``scrub_payload``).

A hash is ``"h1:"`` and 32 lowercase hex digits: the first 128 bits of
HMAC-SHA256(tenant salt, kind + ":" + normalized value), where the tenant salt is
HMAC-SHA256(secret key, ``b"creditflow-tenant:"`` + tenant id). The same email
hashes alike within a tenant, differently across tenants, and hashing a hash
returns it unchanged (a replay or a re-decode never double-hashes).

>>> h = PiiHasher.unkeyed()
>>> a = h.hash_email("acme", "  Ann@Example.COM ")
>>> a == h.hash_email("acme", "ann@example.com") != h.hash_email("globex", "ann@example.com")
True
>>> a[:3], len(a), h.hash_email("acme", a) == a
('h1:', 35, True)
>>> h.hash_phone("acme", "+1 (555) 010-0100") == h.hash_phone("acme", "+15550100100")
True
>>> h.hash_traits("acme", {"Email": "ann@example.com", "plan": "pro"})["plan"]
'pro'
>>> scrub_payload(b'{"bad json, from ann@example.com at 10.1.2.3', h, "acme")
b'{"bad json, from [email] at [ip]'
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import orjson

from creditflow.errors import CreditflowError

__all__ = [
    "HASH_PREFIX",
    "IP_KEYS",
    "KEY_ENV_VAR",
    "MIN_KEY_BYTES",
    "PII_TRAIT_KEYS",
    "PiiHasher",
    "PiiKeyError",
    "canonical_key",
    "is_hashed",
    "load_or_create_key",
    "pii_hasher_from",
    "pii_kind",
    "scrub_payload",
    "scrub_text",
]

log = logging.getLogger("creditflow.pii")

PiiKind = Literal["email", "phone"]

PII_TRAIT_KEYS: Mapping[str, PiiKind] = {
    "email": "email",
    "emailaddress": "email",
    "email1": "email",
    "mail": "email",
    "phone": "phone",
    "phonenumber": "phone",
    "phone1": "phone",
    "mobile": "phone",
    "mobilephone": "phone",
    "mobilenumber": "phone",
    "telephone": "phone",
    "tel": "phone",
}
"""Trait (and metadata) keys whose values are hashed, by ``canonical_key``, with the kind they are
normalized as. ``email``, ``Email``, ``email_address`` and ``emailAddress`` are all one key."""

IP_KEYS: frozenset[str] = frozenset({"ip", "ipaddress", "clientip", "remoteaddr", "xforwardedfor"})
"""Keys (by ``canonical_key``) whose values ``scrub_payload`` replaces by ``[ip]``."""

HASH_PREFIX = "h1:"
"""Marks a creditflow hash (version 1); followed by 32 lowercase hex digits."""
HASH_HEX_CHARS = 32
MIN_KEY_BYTES = 16
"""A secret key shorter than this is refused."""
NEW_KEY_BYTES = 32
"""Size of a key ``load_or_create_key`` creates."""
KEY_ENV_VAR = "CREDITFLOW_PII_KEY"
"""Environment variable holding the key as hex; it takes precedence over the key file."""
SCRUB_INPUT_BYTES = 32 * 1024
"""``scrub_payload`` reads at most this much of a payload (dead letters keep 4 KiB of it)."""

_UNKEYED_KEY = b"creditflow public unkeyed pii key v1"
_SALT_CACHE_MAX = 4096
_HASH_RE = re.compile(r"h1:[0-9a-f]{32}")
_KEY_SEPARATORS = str.maketrans("", "", "_- .")
_NOT_PHONE_CHARS = re.compile(r"[^0-9]")


class PiiKeyError(CreditflowError):
    """The PII key (file or ``CREDITFLOW_PII_KEY``) is unusable."""


def canonical_key(key: str) -> str:
    """A trait key lowercased, without ``_``, ``-``, ``.`` or spaces.

    >>> canonical_key("Email_Address"), canonical_key("phoneNumber")
    ('emailaddress', 'phonenumber')
    """
    return key.lower().translate(_KEY_SEPARATORS)


def pii_kind(key: Any) -> PiiKind | None:
    """``"email"`` or ``"phone"`` when values under ``key`` are PII (``PII_TRAIT_KEYS``), else None.

    >>> pii_kind("E-Mail"), pii_kind("mobile_number"), pii_kind("plan"), pii_kind(3)
    ('email', 'phone', None, None)
    """
    if type(key) is not str:
        return None
    kind = PII_TRAIT_KEYS.get(key)
    if kind is None and len(key) <= 32:
        kind = _canonical_kind(key)
    return kind


@functools.lru_cache(maxsize=4096)
def _canonical_kind(key: str) -> PiiKind | None:
    return PII_TRAIT_KEYS.get(canonical_key(key))


def is_hashed(value: str) -> bool:
    """True for a creditflow hash (``h1:`` + 32 hex digits).

    >>> is_hashed("h1:" + "0" * 32), is_hashed("ann@example.com")
    (True, False)
    """
    return len(value) == len(HASH_PREFIX) + HASH_HEX_CHARS and _HASH_RE.fullmatch(value) is not None


def normalize_email(value: str) -> str:
    """Surrounding whitespace removed, lowercased.

    >>> normalize_email("  Ann@Example.COM\\n")
    'ann@example.com'
    """
    return value.strip().lower()


def normalize_phone(value: str) -> str:
    """A leading ``+`` (when there is one) and the digits; ``""`` when there are no digits.

    >>> normalize_phone(" +1 (555) 010-0100 "), normalize_phone("555.0100"), normalize_phone("n/a")
    ('+15550100100', '5550100', '')
    """
    digits = _NOT_PHONE_CHARS.sub("", value)
    if not digits:
        return ""
    return "+" + digits if value.lstrip().startswith("+") else digits


_NORMALIZE: Mapping[str, Callable[[str], str]] = {"email": normalize_email, "phone": normalize_phone}


class PiiHasher:
    """Keyed, per-tenant hashing of PII values. Thread-safe; picklable.

    ``key`` is the secret (at least ``MIN_KEY_BYTES``); load it with
    ``pii_hasher_from``. The per-tenant salts are cached (at most 4096 tenants,
    then the cache starts over). ``repr`` shows a fingerprint of the key, never the key.
    """

    __slots__ = ("_key", "_salts", "fingerprint")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
            got = f"{len(key)} bytes" if isinstance(key, bytes) else type(key).__name__
            raise PiiKeyError(f"a PII key must be at least {MIN_KEY_BYTES} bytes (got {got})")
        self._key = key
        self._salts: dict[str, bytes] = {}
        self.fingerprint = hmac.new(key, b"creditflow-key-fingerprint", hashlib.sha256).hexdigest()[:12]
        """12 hex digits identifying the key (safe to log): processes of one cluster show the same."""

    @classmethod
    def unkeyed(cls) -> PiiHasher:
        """A hasher with a fixed, public key: for library use and tests when no key is configured.

        It still hashes, so raw values never land anywhere, but anyone can recompute
        its hashes: they are open to a dictionary attack (hash a list of known
        emails and compare). Production runs give a secret key (``pii_hasher_from``).

        >>> PiiHasher.unkeyed() == PiiHasher.unkeyed()
        True
        """
        return _UNKEYED

    @property
    def is_unkeyed(self) -> bool:
        """True for the public key of ``unkeyed()``."""
        return hmac.compare_digest(self._key, _UNKEYED_KEY)

    def tenant_salt(self, tenant_id: str) -> bytes:
        """HMAC-SHA256(key, ``b"creditflow-tenant:"`` + tenant id as UTF-8)."""
        salt = self._salts.get(tenant_id)
        if salt is None:
            salt = hmac.new(
                self._key, b"creditflow-tenant:" + tenant_id.encode("utf-8", "surrogatepass"), hashlib.sha256
            ).digest()
            if len(self._salts) >= _SALT_CACHE_MAX:
                self._salts.clear()
            self._salts[tenant_id] = salt
        return salt

    def hash_value(self, tenant_id: str, kind: str, normalized: str) -> str:
        """``h1:`` + 32 hex digits of HMAC-SHA256(tenant salt, kind + ":" + normalized).

        An already hashed value is returned unchanged, ``""`` stays ``""``.
        """
        if not normalized or is_hashed(normalized):
            return normalized
        digest = hmac.digest(
            self.tenant_salt(tenant_id), f"{kind}:{normalized}".encode("utf-8", "surrogatepass"), "sha256"
        ).hex()
        return HASH_PREFIX + digest[:HASH_HEX_CHARS]

    def hash_email(self, tenant_id: str, value: str) -> str:
        """The hash of ``value`` normalized by ``normalize_email`` (a hash stays as it is)."""
        return self.hash_kind(tenant_id, "email", value)

    def hash_phone(self, tenant_id: str, value: str) -> str:
        """The hash of ``value`` normalized by ``normalize_phone`` (a hash stays as it is)."""
        return self.hash_kind(tenant_id, "phone", value)

    def hash_kind(self, tenant_id: str, kind: str, value: str) -> str:
        """The hash of ``value`` normalized as ``kind`` (``"email"``, ``"phone"``; others are only stripped)."""
        stripped = value.strip()
        if is_hashed(stripped):
            return stripped
        normalize = _NORMALIZE.get(kind)
        return self.hash_value(tenant_id, kind, normalize(value) if normalize is not None else stripped)

    def hash_any(self, tenant_id: str, kind: str, value: Any) -> Any:
        """``value`` under a PII key, hashed whatever its type: a string as ``hash_kind``, a number as
        its text, other values (lists, objects) as their JSON text; ``None`` and booleans unchanged."""
        if type(value) is str:
            return self.hash_kind(tenant_id, kind, value)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return self.hash_kind(tenant_id, kind, str(value))
        try:
            text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
        except Exception:
            text = repr(value)
        return self.hash_value(tenant_id, kind, text)

    def hash_traits(self, tenant_id: str, traits: Mapping[Any, Any]) -> dict[Any, Any]:
        """A copy of ``traits`` with the values of PII keys (``PII_TRAIT_KEYS``) hashed."""
        out = dict(traits)
        for k, v in out.items():
            kind = pii_kind(k)
            if kind is not None:
                out[k] = self.hash_any(tenant_id, kind, v)
        return out

    def hash_nested(self, tenant_id: str, value: Any, depth: int = 0) -> Any:
        """``value`` (JSON-shaped) with the values under PII keys hashed in every object down to
        32 levels deep (deeper ones are left as they are). Returns ``value`` itself when nothing
        changed, else a copy of the changed containers; never modifies ``value``."""
        if depth > 32:
            return value
        if type(value) is dict:
            out = None
            for k, v in value.items():
                container = type(v) is dict or type(v) is list
                kind = pii_kind(k)
                if kind is not None and not container:
                    new = self.hash_any(tenant_id, kind, v)
                elif container:
                    new = self.hash_nested(tenant_id, v, depth + 1)
                else:
                    continue
                if new is not v:
                    if out is None:
                        out = dict(value)
                    out[k] = new
            return value if out is None else out
        if type(value) is list:
            items = [self.hash_nested(tenant_id, v, depth + 1) for v in value]
            return value if all(a is b for a, b in zip(items, value, strict=True)) else items
        return value

    def __repr__(self) -> str:
        return "PiiHasher(unkeyed)" if self.is_unkeyed else f"PiiHasher(key {self.fingerprint})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PiiHasher) and hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __reduce__(self) -> tuple[type[PiiHasher], tuple[bytes]]:
        return PiiHasher, (self._key,)


_UNKEYED = PiiHasher(_UNKEYED_KEY)


# ---------------------------------------------------------------- keys


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path`` (hex text), created when missing: 32 random bytes, file mode 0600.

    Several processes starting at once get the same key (the file appears complete
    or not at all). A file that is not hex or holds fewer than ``MIN_KEY_BYTES``
    raises ``PiiKeyError`` saying how to fix it.
    """
    path = Path(path)
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise PiiKeyError(f"cannot read the PII key file {path} ({exc}); give a readable file") from exc
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise PiiKeyError(f"cannot create the PII key file {path} ({exc}); give a writable place") from exc
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(NEW_KEY_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and never replaces a key another process created meanwhile
            log.warning("created a new PII key in %s (mode 0600); keep it: a new key changes every hash", path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    text = path.read_text(encoding="ascii", errors="replace").strip()
    fix = (
        f"write at least {2 * MIN_KEY_BYTES} hex digits into it (e.g. "
        f"`python -c 'import secrets; print(secrets.token_hex(32))' > {path}; chmod 600 {path}`), "
        "or, if nothing was hashed with it yet, delete it and a new key is created"
    )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise PiiKeyError(f"PII key file {path} does not hold a hex key; {fix}") from None
    if len(key) < MIN_KEY_BYTES:
        raise PiiKeyError(f"PII key file {path} holds {len(key)} bytes, fewer than the {MIN_KEY_BYTES} needed; {fix}")
    try:
        if path.stat().st_mode & 0o077:
            log.warning("PII key file %s is readable by other users; run `chmod 600 %s`", path, path)
    except OSError:
        pass
    return key


def pii_hasher_from(path: Path | None, environ: Mapping[str, str] | None = None) -> PiiHasher:
    """The hasher of a run: the hex key in ``CREDITFLOW_PII_KEY`` if set, else the key
    file ``path`` (created when missing, see ``load_or_create_key``), else (``path``
    None) the public ``PiiHasher.unkeyed()``, with a warning. ``environ`` defaults to ``os.environ``.
    """
    env = os.environ if environ is None else environ
    text = env.get(KEY_ENV_VAR, "").strip()
    if text:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise PiiKeyError(
                f"{KEY_ENV_VAR} is not hex; set it to at least {2 * MIN_KEY_BYTES} hex digits, "
                "e.g. the output of `python -c 'import secrets; print(secrets.token_hex(32))'`"
            ) from None
        if len(key) < MIN_KEY_BYTES:
            raise PiiKeyError(
                f"{KEY_ENV_VAR} holds {len(key)} bytes, fewer than the {MIN_KEY_BYTES} needed; "
                f"set it to at least {2 * MIN_KEY_BYTES} hex digits"
            )
        hasher = PiiHasher(key)
        log.info("hashing PII with the key from %s (fingerprint %s)", KEY_ENV_VAR, hasher.fingerprint)
        return hasher
    if path is None:
        log.warning(
            "no PII key (%s or a key file): emails and phones are hashed with the public key, "
            "which a dictionary attack can reverse",
            KEY_ENV_VAR,
        )
        return PiiHasher.unkeyed()
    hasher = PiiHasher(load_or_create_key(path))
    log.info("hashing PII with the key in %s (fingerprint %s)", path, hasher.fingerprint)
    return hasher


# ---------------------------------------------------------------- scrubbing

EMAIL_MARK = b"[email]"
PHONE_MARK = b"[phone]"
IP_MARK = b"[ip]"

# Each pattern starts only where a run begins (lookbehind) and is bounded, so a
# 32 KiB payload of one long run is scanned in linear time.
_KEYED_RE = re.compile(
    rb'"([A-Za-z][A-Za-z0-9_\-. ]{0,40})"(\s{0,8}:\s{0,8})("(?:[^"\\]|\\.)*+"?|-?[0-9][0-9.eE+\-]{0,40})'
)
_ATEXT = rb"[\w.!#$%&'*+/=?^`{|}~\-\x80-\xff]"  # what an email's local part may hold (RFC 5322 atext, UTF-8)
_EMAIL_RE = re.compile(rb"(?<!" + _ATEXT + rb")" + _ATEXT + rb"++@[\w\-\x80-\xff]++(?:\.[\w\-\x80-\xff]++)*+")
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rb"(?<![\w./])" + (_OCTET + rb"\.") * 3 + _OCTET + rb"(?![\w]|\.[0-9])")
_IPV6_RE = re.compile(rb"(?<![\w:.])[0-9A-Fa-f:]{2,45}(?:\.[0-9.]{1,15})?")
_PHONE_RE = re.compile(rb"(?<![\w+.])\+?\(?[0-9][0-9 ()\-.]{0,30}[0-9](?!\w)")
_PLUS_PHONE_RE = re.compile(rb"(?<![\w+.])\+\(?[0-9][0-9 ()\-.]{0,30}[0-9](?!\w)")
_ISO_DATE_RE = re.compile(rb"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MARK_OF_KIND = {"email": EMAIL_MARK, "phone": PHONE_MARK}


def _keyed(m: re.Match[bytes]) -> bytes:
    key = canonical_key(m.group(1).decode("ascii"))
    kind = PII_TRAIT_KEYS.get(key)
    mark = _MARK_OF_KIND[kind] if kind is not None else IP_MARK if key in IP_KEYS else None
    if mark is None or m.group(3) in (b'""', b'"'):
        return m.group(0)
    return b'"' + m.group(1) + b'"' + m.group(2) + b'"' + mark + b'"'


def _ipv6(m: re.Match[bytes]) -> bytes:
    text = m.group(0)
    if text.count(b":") < 2:
        return text
    for candidate in (text, text.rstrip(b":")):
        try:
            ipaddress.IPv6Address(candidate.decode("ascii"))
        except ValueError:
            continue
        return IP_MARK + text[len(candidate) :]
    return text


def _phone(m: re.Match[bytes]) -> bytes:
    text = m.group(0)
    digits = sum(1 for c in text if 48 <= c <= 57)
    # More than 15 digits (E.164's limit) in one bare run is an id or a number; with a '+' or
    # separators it may be a phone followed by more digits (or a card number): scrubbed too.
    if digits < 7 or (digits > 15 and digits == len(text)) or _ISO_DATE_RE.match(text):
        return text
    if not text.startswith(b"+"):
        start = m.start()
        before = m.string[max(0, start - 2) : start]
        if before.endswith(b":") or before == b": ":  # a JSON number (a time, an amount), not a phone
            return text
    return PHONE_MARK


PhoneRule = Literal["all", "plus", "none"]
"""Which digit runs ``_scrub_bytes`` takes for phones: all that look like one, only those
written with a leading ``+`` (few false positives), or none."""


def _scrub_bytes(data: bytes, phones: PhoneRule = "all") -> bytes:
    data = _KEYED_RE.sub(_keyed, data)
    data = _EMAIL_RE.sub(EMAIL_MARK, data)
    data = _IPV4_RE.sub(IP_MARK, data)
    data = _IPV6_RE.sub(_ipv6, data)
    if phones == "all":
        return _PHONE_RE.sub(_phone, data)
    if phones == "plus":
        return _PLUS_PHONE_RE.sub(_phone, data)
    return data


def scrub_text(text: str, phones: PhoneRule = "none") -> str:
    """``text`` with ``"email": "..."`` pairs, email and IP addresses (and phone numbers, see
    ``phones``) replaced by ``[email]``, ``[ip]``, ``[phone]``. Used for dead-letter details.
    Never raises.

    >>> scrub_text("from ann@example.com via 2001:db8::1, at 1767225600000 ms")
    'from [email] via [ip], at 1767225600000 ms'
    >>> scrub_text("call +49 30 1234567 or 030 1234567", phones="plus")
    'call [phone] or 030 1234567'
    """
    try:
        return _scrub_bytes(text.encode("utf-8", "surrogatepass"), phones).decode("utf-8", "replace")
    except Exception:
        return "[detail withheld: it could not be scrubbed of personal data]"


def _scrub_json(v: Any, hasher: PiiHasher, tenant_id: str, depth: int) -> Any:
    if type(v) is str:
        return scrub_text(v, phones="plus") if v else v
    if depth > 64:
        return "[too deep]" if isinstance(v, dict | list) else v
    if type(v) is list:
        return [_scrub_json(x, hasher, tenant_id, depth + 1) for x in v]
    if type(v) is dict:
        out = {}
        for k, x in v.items():
            kind = pii_kind(k)
            if kind is not None and not isinstance(x, dict | list):
                out[k] = hasher.hash_any(tenant_id, kind, x)
            elif type(k) is str and canonical_key(k) in IP_KEYS and x not in (None, ""):
                out[k] = IP_MARK.decode()
            else:
                out[k] = _scrub_json(x, hasher, tenant_id, depth + 1)
        return out
    return v


def scrub_payload(raw: object, hasher: PiiHasher, tenant_id: str) -> bytes:
    """``raw`` without emails, phone numbers or IP addresses, for a dead letter. Never raises.

    A JSON payload is parsed: values under PII keys (``PII_TRAIT_KEYS``, at any
    depth, e.g. ``traits.email``) are hashed for ``tenant_id`` (or the payload's own
    ``tenant_id`` when that is ``""``), values under IP keys (``context.ip``) become
    ``"[ip]"``, and emails, phones and IPs inside any other string become
    ``[email]``, ``[phone]``, ``[ip]``; it is re-serialized only if something
    changed. Inside those strings only phones written with a leading ``+`` are taken
    (event ids, dates and amounts hold long digit runs; phones under PII keys are
    hashed anyway). Anything else (truncated JSON, Avro, garbage; at most the first
    32 KiB) is scrubbed as bytes: ``"email": "..."`` pairs, email addresses,
    IPv4/IPv6 addresses and phone numbers (7 or more digits with a ``+`` or separators,
    or a bare run of 7-15, that are not a JSON number or a date) become the markers.

    >>> h = PiiHasher.unkeyed()
    >>> scrub_payload(b'{"context": {"ip": "10.0.0.1"}, "note": "call +49 30 1234567"}', h, "t1")
    b'{"context":{"ip":"[ip]"},"note":"call [phone]"}'
    >>> scrub_payload(b'{"traits": {"phone": "+4930', h, "t1")
    b'{"traits": {"phone": "[phone]"'
    """
    try:
        data = bytes(raw) if not isinstance(raw, str) else raw.encode("utf-8", "replace")  # type: ignore[call-overload]
    except Exception:
        return b""
    try:
        if len(data) <= SCRUB_INPUT_BYTES and data[:1] in (b"{", b"[", b" ", b"\n", b"\t", b"\r"):
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict | list):
                if not tenant_id and type(obj) is dict and type(obj.get("tenant_id")) is str:
                    tenant_id = obj["tenant_id"]
                scrubbed = _scrub_json(obj, hasher, tenant_id, 0)
                return data if scrubbed == obj else orjson.dumps(scrubbed)
        return _scrub_bytes(data[:SCRUB_INPUT_BYTES])
    except Exception:
        try:
            return _scrub_bytes(data[:SCRUB_INPUT_BYTES])
        except Exception:
            return b""
