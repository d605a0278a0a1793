"""The versioned event contract: one Avro schema file per version.

Versions are discovered from the files ``schemas/event.v<N>.avsc`` next to this
module, so adding ``event.v3.avsc`` is all it takes to publish a new version
(the compatibility tests iterate ``SCHEMA_VERSIONS`` and check it against v2).
The JSON validator (``schemas.decode``) derives its allowed field names from
the same files, so the JSON and Avro contracts cannot drift apart.

>>> sorted(SCHEMA_VERSIONS)[:2], LATEST_VERSION >= 2
([1, 2], True)
>>> "consent" in allowed_fields(2), "consent" in allowed_fields(1)
(True, False)
>>> sorted(record_fields(1, "utm"))
['campaign', 'content', 'medium', 'source', 'term']
>>> load_schema(1)["name"]
'creditflow.Event'
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from creditflow.errors import CreditflowError

SCHEMA_DIR = Path(__file__).resolve().parent
_FILE_RE = re.compile(r"event\.v([1-9][0-9]*)\.avsc")


class UnknownSchemaVersionError(CreditflowError, KeyError):
    """A schema version that has no ``event.v<N>.avsc`` file."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def _discover() -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in SCHEMA_DIR.glob("event.v*.avsc"):
        m = _FILE_RE.fullmatch(path.name)
        if m:
            found[int(m.group(1))] = path
    versions = sorted(found)
    if versions != list(range(1, len(versions) + 1)):
        raise CreditflowError(
            f"event schema versions in {SCHEMA_DIR} must be 1..N without gaps, found {versions}; "
            "add the missing event.v<N>.avsc file"
        )
    return {v: found[v] for v in versions}


SCHEMA_VERSIONS: dict[int, Path] = _discover()
"""Schema version -> path of its ``.avsc`` file, in ascending order."""
LATEST_VERSION: int = max(SCHEMA_VERSIONS)
"""The newest version; JSON payloads without ``schema_version`` and Avro
payloads without a writer version are read as this one."""


def _check_version(version: int) -> Path:
    path = SCHEMA_VERSIONS.get(version) if type(version) is int else None
    if path is None:
        raise UnknownSchemaVersionError(
            f"unknown event schema version {version!r}; known versions: {sorted(SCHEMA_VERSIONS)}"
        )
    return path


@cache
def raw_schema(version: int) -> dict[str, Any]:
    """The schema of ``version`` as written in its ``.avsc`` file (plain JSON).

    Callers must not mutate the returned dict (it is cached).
    """
    path = _check_version(version)
    with path.open("rb") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


@cache
def load_schema(version: int) -> Any:
    """The parsed fastavro schema of ``version`` (cached; do not mutate).

    Raises ``UnknownSchemaVersionError`` for a version without a file.
    """
    return fastavro.parse_schema(raw_schema(version))


@cache
def allowed_fields(version: int) -> frozenset[str]:
    """Names of the top-level fields of ``version``."""
    return frozenset(f["name"] for f in raw_schema(version)["fields"])


@cache
def record_fields(version: int, field: str) -> frozenset[str]:
    """Names of the fields of the nested record behind top-level ``field``
    (``utm``, ``click_ids``, ``context``, ``conversion``, ``metrics``).

    Raises ``KeyError`` when ``field`` is not a (nullable) record field.
    """
    for f in raw_schema(version)["fields"]:
        if f["name"] != field:
            continue
        branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
        for branch in branches:
            if isinstance(branch, dict) and branch.get("type") == "record":
                return frozenset(sub["name"] for sub in branch["fields"])
        break
    raise KeyError(f"field {field!r} of event schema v{version} is not a record")
