"""The suppression list of the right to be forgotten: which persons a ``deletion_request`` erased.

A person is named by the keys the flow knows them by (``state.device_graph``):
``u:<user_id>``, ``d:<device_id>``, ``a:<anonymous_id>``. The list never holds
those keys, only their ``forget_hash``: ``f1:`` and 32 hex digits of keyed
BLAKE2b (the tenant's secret salt, ``PiiHasher.tenant_salt``) over the key. The
same key hashes alike within a tenant and differently across tenants; without
the secret key nobody can tell whose hash it is, and with it, whether a given
id was forgotten (all a suppression list must answer).

Where the list lives:

* durably in ClickHouse (``forgotten_ids``, written by the sink from each
  ``ForgetPerson``), read by every process when a run starts
  (``sinks.clickhouse_forget.load_forgotten``), so a replay or a backfill
  cannot bring a forgotten person back;
* in each process, one ``ForgottenIds``: the decoder suppresses any event that
  names a listed key (reason ``forgotten``, count only), and the keyed steps
  add the keys they erase. A person's events all meet at the person's key, on
  one worker, so that worker's list is complete for them the moment the
  deletion is applied; other processes learn of it at their next start.

Bound: the list grows by one 35-character hash per erased key, for as long as
the tenant exists (it is what stops a replay); 1M erased keys take ~100 MB per
process. A tenant whose list is empty costs the decoder one dict lookup per event.

>>> ids = ForgottenIds(lambda tenant: b"salt-of-" + tenant.encode())
>>> h = ids.add("acme", "u:ann")
>>> h[:3], len(h), h == forget_hash(b"salt-of-acme", "u:ann")
('f1:', 35, True)
>>> from creditflow.events import Event, SourcePosition
>>> ev = Event("e1", "acme", "click", 0, SourcePosition("f", "0", "0"), anonymous_id="x", user_id="ann")
>>> ids.names_forgotten(ev), ids.has("globex", "u:ann")
(True, False)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from creditflow.events import Event, pickled_positionally

__all__ = [
    "FORGET_HASH_PREFIX",
    "FORGET_TABLES",
    "ForgetPerson",
    "ForgottenIds",
    "forget_hash",
    "keys_of",
    "raw_id_of",
]

FORGET_HASH_PREFIX = "f1:"

FORGET_TABLES = ("attribution_credits", "conversions", "dead_letters", "forgotten_ids")
"""The ClickHouse tables a ``ForgetPerson`` reaches: the person's rows are deleted from the first three,
the last one records the hash (the durable suppression list)."""


_ID_FIELDS = (("u:", "user_id"), ("d:", "device_id"), ("a:", "anonymous_id"))
"""Person key prefix and the event field holding that id."""


def forget_hash(salt: bytes, person_key: str) -> str:
    """``f1:`` + 32 hex digits of BLAKE2b-128 keyed with ``salt`` over ``person_key`` (``u:...``, ``d:...``, ``a:...``).

    >>> forget_hash(b"s", "u:ann") == forget_hash(b"s", "u:ann") != forget_hash(b"t", "u:ann")
    True
    """
    digest = hashlib.blake2b(person_key.encode("utf-8", "surrogatepass"), digest_size=16, key=salt[:64]).hexdigest()
    return FORGET_HASH_PREFIX + digest


def keys_of(event: Event) -> tuple[str, ...]:
    """The person keys ``event`` names: ``u:`` user, ``d:`` device, ``a:`` anonymous id (those it has).

    >>> from creditflow.events import SourcePosition
    >>> keys_of(Event("e", "t", "click", 0, SourcePosition("f", "0", "0"), anonymous_id="a1", user_id="u1"))
    ('u:u1', 'a:a1')
    """
    return tuple(prefix + value for prefix, name in _ID_FIELDS if (value := getattr(event, name)))


def raw_id_of(person_key: str) -> str:
    """The id inside a person key: ``raw_id_of("d:phone-1") == "phone-1"``."""
    return person_key[2:]


@pickled_positionally
@dataclass(frozen=True, slots=True)
class ForgetPerson:
    """A person key erased by a ``deletion_request``: what the sinks must delete and remember.

    ``person_key`` is the ``person_id`` of the person's rows (credits, conversions,
    archived journeys) and travels only in flight; what is stored is ``id_hash``.
    """

    tenant_id: str
    person_key: str
    id_hash: str
    requested_ts_ms: int
    """Event time of the deletion request."""

    table = "forgotten_ids"


class ForgottenIds:
    """One process's view of the suppression list: per tenant, the hashes of erased person keys.

    ``salt_of(tenant_id)`` is the tenant's secret salt (``PiiHasher.tenant_salt``).
    Shared by the decoder and the keyed steps of a process (threads of one process
    see one list; adding is a single ``set.add``).
    """

    __slots__ = ("_salt_of", "_hashes")

    def __init__(self, salt_of: Callable[[str], bytes], hashes: Iterable[tuple[str, str]] = ()) -> None:
        self._salt_of = salt_of
        self._hashes: dict[str, set[str]] = {}
        for tenant_id, id_hash in hashes:
            self.add_hash(tenant_id, id_hash)

    def __len__(self) -> int:
        return sum(map(len, self._hashes.values()))

    def __reduce__(self) -> tuple[object, ...]:
        pairs = [(t, h) for t, hs in self._hashes.items() for h in hs]
        return (ForgottenIds, (self._salt_of, pairs))

    def hash_of(self, tenant_id: str, person_key: str) -> str:
        return forget_hash(self._salt_of(tenant_id), person_key)

    def add(self, tenant_id: str, person_key: str) -> str:
        """List ``person_key`` of ``tenant_id``; returns its hash."""
        id_hash = self.hash_of(tenant_id, person_key)
        self.add_hash(tenant_id, id_hash)
        return id_hash

    def add_hash(self, tenant_id: str, id_hash: str) -> None:
        hashes = self._hashes.get(tenant_id)
        if hashes is None:
            hashes = self._hashes[tenant_id] = set()
        hashes.add(id_hash)

    def has(self, tenant_id: str, person_key: str) -> bool:
        """Whether ``person_key`` of ``tenant_id`` was erased."""
        hashes = self._hashes.get(tenant_id)
        return bool(hashes) and self.hash_of(tenant_id, person_key) in hashes  # type: ignore[operator]

    def has_hash(self, tenant_id: str, id_hash: str) -> bool:
        hashes = self._hashes.get(tenant_id)
        return hashes is not None and id_hash in hashes

    def names_forgotten(self, event: Event) -> bool:
        """Whether ``event`` names any erased key of its tenant (one dict lookup when the tenant has none)."""
        hashes = self._hashes.get(event.tenant_id)
        if not hashes:
            return False
        salt = self._salt_of(event.tenant_id)
        return any(forget_hash(salt, key) in hashes for key in keys_of(event))

    def names_forgotten_raw(self, tenant_id: str, raw: bytes) -> bool:
        """Whether a payload that did not decode (a dead letter's ``raw``) names an erased key of ``tenant_id``:
        best effort, for a JSON object with ``tenant_id`` and the id fields as strings.

        >>> ids = ForgottenIds(lambda t: b"s"); _ = ids.add("acme", "a:x1")
        >>> ids.names_forgotten_raw("", b'{"tenant_id": "acme", "anonymous_id": "x1", "timestamp": "bad"}')
        True
        """
        if not self._hashes or not raw.lstrip().startswith(b"{"):
            return False
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(obj, dict):
            return False
        tenant = obj.get("tenant_id") if not tenant_id else tenant_id
        return isinstance(tenant, str) and self.names_forgotten_object(tenant, obj)

    def names_forgotten_object(self, tenant_id: str, obj: Mapping[str, Any]) -> bool:
        """Whether a payload read as an object (not an ``Event``) names an erased key of ``tenant_id`` in its
        ``user_id``, ``device_id`` or ``anonymous_id`` string."""
        hashes = self._hashes.get(tenant_id)
        if not hashes:
            return False
        salt = self._salt_of(tenant_id)
        for prefix, name in _ID_FIELDS:
            value = obj.get(name)
            if isinstance(value, str) and value and forget_hash(salt, prefix + value) in hashes:
                return True
        return False

    def tenant_hashes(self, tenant_id: str) -> frozenset[str]:
        return frozenset(self._hashes.get(tenant_id, ()))

    def tenants(self) -> list[str]:
        return sorted(t for t, hs in self._hashes.items() if hs)
