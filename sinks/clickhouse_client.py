"""Connecting to ClickHouse, classifying its errors, and retrying transient ones.

ClickHouse is always reached through clickhouse-connect, so the same SQL and the
same client API serve both deployments:

* ``chdb:///abs/path`` - embedded ClickHouse (chDB) storing its data in a local
  directory, created if missing. chDB allows ONE data path per process (a second
  path in the same process fails while the first has an open client) and one
  process per path (a second process fails with "Cannot lock file").
* ``http://user:password@host:8123[/database]`` or ``https://...`` - a ClickHouse
  server. Query parameters are passed to clickhouse-connect
  (e.g. ``?connect_timeout=5``).

The database named in an HTTP DSN path is used; otherwise ``database`` (default
``"default"``). It is created if it does not exist.

Errors and retries
    :func:`is_transient` sorts errors: connection refused/reset, timeouts,
    network errors and server or chDB overload (``TOO_MANY_PARTS``,
    ``MEMORY_LIMIT_EXCEEDED``, too many queries, ...) are transient;
    everything else (SQL errors, unknown table or column, authentication,
    access, a bad DSN) is terminal. :func:`retry_call` retries transient
    errors with capped exponential backoff - forever by default
    (``ClickHouseSettings.max_retries=None``), or a finite number of times -
    logging a warning per failed attempt (what failed, the attempt, the next
    delay, the error) and an info line once the call succeeds again. Terminal
    errors raise :class:`ClickHouseSinkError` at once, naming what failed and
    the fix.

>>> mask_dsn("http://writer:s3cret@ch.internal:8123/analytics")
'http://writer:***@ch.internal:8123/analytics'
>>> ClickHouseSettings("http://writer:s3cret@ch:8123", max_retries=3)  # doctest: +ELLIPSIS
ClickHouseSettings(dsn='http://writer:***@ch:8123', database='default', max_retries=3, ...)
>>> ClickHouseSettings("chdb:///tmp/x").max_retries is None  # retry transient errors forever
True
>>> backoff_s(1, 0.5, 30.0), backoff_s(4, 0.5, 30.0), backoff_s(20, 0.5, 30.0)
(0.5, 4.0, 30.0)
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from creditflow.config import TenantConfigs
from creditflow.errors import CreditflowError
from creditflow.retention import RETENTION_INTERVAL_S

__all__ = [
    "ClickHouseSettings",
    "ClickHouseSinkError",
    "backoff_s",
    "connect",
    "describe_error",
    "fix_for",
    "insert_rows",
    "is_transient",
    "mask_dsn",
    "retry_call",
    "run_call",
]

logger = logging.getLogger("creditflow.sinks.clickhouse")

T = TypeVar("T")


class ClickHouseSinkError(CreditflowError):
    """ClickHouse could not be reached or refused a write; the message says what to fix.

    ``transient`` is True when retrying later may succeed (the server was
    unreachable, overloaded, out of memory, ...) and retries ran out.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


_PASSWORD_RE = re.compile(r"(//[^:/@?#]*:)[^@/]*@")


def mask_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***``, safe for logs and messages."""
    return _PASSWORD_RE.sub(r"\1***@", dsn)


_SCHEMES = ("chdb", "http", "https")


@dataclass(frozen=True)
class ClickHouseSettings:
    """Where and how the ClickHouse sink writes.

    ``max_retries`` counts retries after the first attempt of one call (an
    insert, a key lookup, connecting, migrating) that failed with a transient
    error; ``None`` (the default) retries until ClickHouse answers, so an
    outage blocks the flow instead of crashing it. Waits double from
    ``initial_backoff_s`` up to ``max_backoff_s``. ``block_rows`` caps the rows
    of one insert (one deduplication token each). ``migrations_dir`` replaces
    the packaged ``sinks/migrations`` (tests, or a deployment's own files).
    The repr masks the DSN password.
    """

    dsn: str = field(repr=False)
    database: str = "default"
    max_retries: int | None = None
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    block_rows: int = 50_000
    migrations_dir: Path | None = None
    replay_margin_s: float = 60.0
    """After a restart, rows written up to this long before the sink's last snapshot are also
    loaded as possibly replayed (covers items of the next epoch written before that snapshot and
    clock skew between hosts); keep it above a few snapshot intervals."""
    write_behind_s: float | None = None
    """None: ``write_batch`` writes before it returns. A number: rows are buffered and written by a
    background thread once ``write_behind_rows`` wait or the oldest has waited this many seconds
    (``sinks/write_behind.py``); snapshots wait for the buffer, so the guarantees are unchanged."""
    write_behind_rows: int = 50_000
    """Flush size of the write-behind buffer; it holds at most 4x this (backpressure)."""
    commit_log_every_s: float = 1.0
    """How often the commit log (``sink_commits``) is written while batches keep coming: its rows wait
    for a batch at least this long after the last write, or for the next snapshot, each stamped when
    its batch committed; with write-behind, a batch after which nothing waits (the flow went quiet)
    writes them at once. Every insert costs ~6-8 ms of chDB CPU however small (and a part to merge),
    so logging each 100 ms batch at once was a third of the sink's inserts. 0: after every batch. The
    first batch's row is written at once."""
    replay_keys_cap: int = 1_000_000
    """Most keys loaded after a restart (memory bound: ~300 B each); beyond it every batch is
    looked up in ClickHouse instead (slower, same guarantee)."""
    retention: TenantConfigs | None = None
    """Each tenant's retention (``sinks.clickhouse_retention``): the sink deletes rows past it at its
    first snapshot and then at most once per ``retention_interval_s``. None: it never deletes by age."""
    retention_interval_s: float = RETENTION_INTERVAL_S

    def __post_init__(self) -> None:
        scheme = self.dsn.partition("://")[0].lower() if "://" in self.dsn else ""
        if scheme not in _SCHEMES:
            raise ClickHouseSinkError(
                f"ClickHouse DSN {mask_dsn(self.dsn)!r} is not supported: use chdb:///absolute/path "
                "(embedded chDB) or http(s)://user:password@host:8123[/database] (a ClickHouse server)"
            )
        if not self.database:
            raise ClickHouseSinkError("ClickHouseSettings.database is empty: name a database, e.g. 'default'")
        if self.max_retries is not None and self.max_retries < 0:
            raise ClickHouseSinkError(
                f"ClickHouseSettings.max_retries={self.max_retries} must be >= 0, or None to retry forever"
            )
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ClickHouseSinkError(
                f"ClickHouseSettings backoff must satisfy 0 <= initial_backoff_s ({self.initial_backoff_s}) "
                f"<= max_backoff_s ({self.max_backoff_s})"
            )
        if self.block_rows < 1:
            raise ClickHouseSinkError(f"ClickHouseSettings.block_rows={self.block_rows} must be >= 1")
        if not self.commit_log_every_s >= 0:
            raise ClickHouseSinkError(
                f"ClickHouseSettings.commit_log_every_s must be >= 0 s (got {self.commit_log_every_s})"
            )
        if self.write_behind_s is not None and (self.write_behind_s <= 0 or self.write_behind_rows < 1):
            raise ClickHouseSinkError(
                f"ClickHouseSettings.write_behind_s ({self.write_behind_s}) must be > 0 or None, and "
                f"write_behind_rows ({self.write_behind_rows}) >= 1"
            )
        if self.replay_margin_s < 0 or self.replay_keys_cap < 0:
            raise ClickHouseSinkError(
                f"ClickHouseSettings.replay_margin_s ({self.replay_margin_s}) and replay_keys_cap "
                f"({self.replay_keys_cap}) must be >= 0"
            )

    def __repr__(self) -> str:
        return (
            f"ClickHouseSettings(dsn={mask_dsn(self.dsn)!r}, database={self.database!r}, "
            f"max_retries={self.max_retries}, initial_backoff_s={self.initial_backoff_s}, "
            f"max_backoff_s={self.max_backoff_s}, block_rows={self.block_rows}, "
            f"migrations_dir={self.migrations_dir!r})"
        )


# --- error classification ----------------------------------------------------

TRANSIENT_CODES: frozenset[int] = frozenset(
    {
        3,  # UNEXPECTED_END_OF_FILE
        23,  # CANNOT_READ_FROM_ISTREAM
        24,  # CANNOT_WRITE_TO_OSTREAM
        32,  # ATTEMPT_TO_READ_AFTER_EOF
        159,  # TIMEOUT_EXCEEDED
        160,  # TOO_SLOW
        173,  # CANNOT_ALLOCATE_MEMORY
        198,  # DNS_ERROR
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        243,  # NOT_ENOUGH_SPACE
        252,  # TOO_MANY_PARTS
        279,  # ALL_CONNECTION_TRIES_FAILED
        285,  # TOO_FEW_LIVE_REPLICAS
        319,  # UNKNOWN_STATUS_OF_INSERT
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        999,  # KEEPER_EXCEPTION
        1000,  # POCO_EXCEPTION
    }
)
"""ClickHouse error codes worth retrying: overload, memory, network, timeouts."""

_TRANSIENT_TEXT = re.compile(
    r"TOO_MANY_PARTS|MEMORY_LIMIT_EXCEEDED|TIMEOUT_EXCEEDED|SOCKET_TIMEOUT|NETWORK_ERROR|"
    r"TOO_MANY_SIMULTANEOUS_QUERIES|CANNOT_ALLOCATE_MEMORY|KEEPER_EXCEPTION|TABLE_IS_READ_ONLY|"
    r"connection refused|connection reset|connection aborted|broken pipe|timed out|"
    r"max retries exceeded|temporarily unavailable|service unavailable",
    re.IGNORECASE,
)

_FIX_BY_NAME: dict[str, str] = {
    "UNKNOWN_TABLE": "the table is missing: run the sink's migrations (sinks.clickhouse_migrations.migrate)",
    "UNKNOWN_DATABASE": "the database is missing: create it or fix the database in the DSN/settings",
    "NO_SUCH_COLUMN_IN_TABLE": "the table's columns differ from the sink's: apply the missing migrations",
    "UNKNOWN_IDENTIFIER": "the table's columns differ from the sink's: apply the missing migrations",
    "THERE_IS_NO_COLUMN": "the table's columns differ from the sink's: apply the missing migrations",
    "SYNTAX_ERROR": "the SQL is invalid: this is a bug in the sink or a migration file",
    "AUTHENTICATION_FAILED": "check the user and password in the DSN: http://user:password@host:8123",
    "UNKNOWN_USER": "the DSN's user does not exist on the server: check the user in the DSN",
    "WRONG_PASSWORD": "check the password in the DSN: http://user:password@host:8123",
    "REQUIRED_PASSWORD": "put the password in the DSN: http://user:password@host:8123",
    "ACCESS_DENIED": "grant the DSN's user INSERT/SELECT/CREATE on the database",
    "READONLY": "the DSN's user is read-only: use a user allowed to write",
    "TYPE_MISMATCH": "a value does not fit its column type: check the row conversion (sinks.clickhouse_rows)",
}


def is_transient(exc: BaseException) -> bool:
    """True if retrying the same call later may succeed.

    Connection, network and timeout failures and server overload (too many
    parts, memory limit, too many queries) are transient; anything else with a
    ClickHouse error code (syntax, unknown table or column, authentication,
    type mismatch) and any other exception is terminal.

    >>> is_transient(ConnectionRefusedError())
    True
    >>> is_transient(DatabaseError("Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)", code=252))
    True
    >>> is_transient(DatabaseError("Code: 60. DB::Exception: Unknown table (UNKNOWN_TABLE)", code=60))
    False
    >>> is_transient(ValueError("bad value"))
    False
    """
    if isinstance(exc, ClickHouseSinkError):
        return exc.transient
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, DatabaseError):
        code = exc.code
        if code is not None:
            return code in TRANSIENT_CODES
        if _TRANSIENT_TEXT.search(str(exc)):
            return True
        # No code: transport failures (OperationalError), e.g. HTTP 502/503/504 after retries.
        return isinstance(exc, OperationalError)
    if isinstance(exc, OSError):
        return True
    return False


def fix_for(exc: BaseException) -> str | None:
    """What to do about a ClickHouse error, if the error is a known kind."""
    name = getattr(exc, "name", None)
    if name in _FIX_BY_NAME:
        return _FIX_BY_NAME[name]
    text = str(exc)
    for known, hint in _FIX_BY_NAME.items():
        if known in text:
            return hint
    return None


def describe_error(exc: BaseException) -> str:
    """The error text plus, when known, what to do about it."""
    text = str(exc).strip() or type(exc).__name__
    fix = fix_for(exc)
    return f"{text} -> fix: {fix}" if fix else text


def backoff_s(attempt: int, initial_s: float, max_s: float) -> float:
    """Wait before retry number ``attempt`` (1-based): doubling from ``initial_s``, capped at ``max_s``."""
    return min(max_s, initial_s * (2 ** min(attempt - 1, 62)))


def insert_rows(
    client: Client,
    table: str,
    data: Any,
    column_names: Sequence[str],
    column_types: Sequence[ClickHouseType],
    settings: dict[str, Any],
    column_oriented: bool = False,
) -> None:
    """``client.insert`` that leaves no reference cycle behind.

    clickhouse-connect's ``InsertContext`` keeps a bound method of itself
    (``_next_block_data``): a cycle that holds the inserted rows until Python's
    cycle collector runs. In a flow process (``flows.gc_policy``) that was a
    minute's inserts (1,309 contexts and 17,030 column tuples at 5k events/s),
    promoted into the generation whose collection paused the flow 0.85 s.
    Dropping the bound method after the insert lets reference counting free the
    context and its rows at once. (A failed insert still leaves a cycle through
    its traceback's frames: rare, and the collector takes it.)
    """
    context = client.create_insert_context(
        table,
        list(column_names),
        column_types=list(column_types),
        column_oriented=column_oriented,
        settings=settings,
        data=data,
    )
    try:
        client.insert(context=context)
    finally:
        vars(context).pop("_next_block_data", None)


def retry_call(
    fn: Callable[[], T],
    *,
    what: str,
    settings: ClickHouseSettings,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``fn``; retry transient errors with capped exponential backoff.

    Waits ``backoff_s(attempt, settings.initial_backoff_s, settings.max_backoff_s)``
    after failed attempt number ``attempt``. With ``settings.max_retries=None``
    it retries for as long as the errors stay transient; otherwise it gives up
    after that many retries with a *transient* :class:`ClickHouseSinkError`.

    Each failed attempt logs a warning naming ``what`` (the table, the
    migration, the DSN), the attempt, the next delay and the error; a success
    after failures logs "ClickHouse writes resumed after N attempts / S
    seconds". A terminal error raises :class:`ClickHouseSinkError` at once,
    naming ``what`` and the fix.

    >>> calls = []
    >>> def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise ConnectionResetError("connection reset by peer")
    ...     return "ok"
    >>> retry_call(flaky, what="test", settings=ClickHouseSettings("chdb:///x"), sleep=lambda s: None), len(calls)
    ('ok', 3)
    """
    started = clock()
    limit = settings.max_retries
    attempt = 0
    while True:
        attempt += 1
        try:
            result = fn()
        except ClickHouseSinkError as exc:
            if not exc.transient:
                raise
            error: BaseException = exc
        except Exception as exc:
            if not is_transient(exc):
                raise ClickHouseSinkError(f"{what} failed: {describe_error(exc)}") from exc
            error = exc
        else:
            if attempt > 1:
                logger.info(
                    "ClickHouse writes resumed after %d attempts / %.1f seconds: %s succeeded",
                    attempt,
                    clock() - started,
                    what,
                )
            return result
        if limit is not None and attempt > limit:
            # A ClickHouseSinkError (e.g. from connect) already says what to check.
            check = (
                ""
                if isinstance(error, ClickHouseSinkError)
                else f" -> fix: check that ClickHouse at {mask_dsn(settings.dsn)} is reachable and not overloaded"
            )
            raise ClickHouseSinkError(
                f"{what} failed after {attempt} attempts ({limit} retries, {clock() - started:.1f} s) with "
                f"transient errors, last: {describe_error(error)}{check}; or raise max_retries "
                "(None retries forever)",
                transient=True,
            ) from error
        wait = backoff_s(attempt, settings.initial_backoff_s, settings.max_backoff_s)
        logger.warning(
            "%s: transient error on attempt %d %s, next attempt in %.3fs: %s",
            what,
            attempt,
            f"of {limit + 1}" if limit is not None else "(retrying until ClickHouse answers)",
            wait,
            describe_error(error),
        )
        sleep(wait)


# --- connecting ----------------------------------------------------------------


def run_call(fn: Callable[[], T], *, what: str, settings: ClickHouseSettings | None) -> T:
    """:func:`retry_call` with ``settings``; without, one attempt (a human runs a sweep), errors named alike."""
    if settings is not None:
        return retry_call(fn, what=what, settings=settings)
    try:
        return fn()
    except ClickHouseSinkError:
        raise
    except Exception as exc:
        raise ClickHouseSinkError(f"{what} failed: {describe_error(exc)}", transient=is_transient(exc)) from exc


def _chdb_path(dsn: str) -> str:
    parts = urlsplit(dsn)
    path = unquote(parts.path)
    if parts.netloc or not path.startswith("/") or parts.query or parts.fragment:
        raise ClickHouseSinkError(
            f"chDB DSN {dsn!r} must be chdb:///absolute/path (three slashes, an absolute directory, "
            "no query string); e.g. chdb:///var/lib/creditflow/chdb"
        )
    return path


def _dsn_database(dsn: str) -> str:
    path = urlsplit(dsn).path.strip("/")
    if "/" in path:
        raise ClickHouseSinkError(
            f"ClickHouse DSN {mask_dsn(dsn)!r} has a path {path!r}: the path can only name one database, "
            "e.g. http://host:8123/analytics"
        )
    return unquote(path)


def _open_chdb(dsn: str) -> Client:
    path = _chdb_path(dsn)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ClickHouseSinkError(
            f"cannot create the chDB data directory for {dsn!r}: {exc} -> fix: point the DSN at a writable directory"
        ) from exc
    try:
        return clickhouse_connect.get_client(dsn=f"chdb://{path}")
    except Exception as exc:
        text = str(exc)
        if "already initialized with path" in text:
            fix = (
                "this process already has another chDB data path open and chDB allows one path per "
                "process: close every client of the other path first, or use the same path"
            )
        elif "initializing EmbeddedServer" in text or "Cannot lock" in text:
            fix = (
                "another process probably holds this path (chDB allows one process per data path): "
                "stop it, give each process its own path, or use a ClickHouse server (http://...)"
            )
        else:
            fix = "check the path and the chdb installation"
        raise ClickHouseSinkError(f"cannot open chDB at {dsn!r}: {text} -> fix: {fix}") from exc


def _open_http(dsn: str) -> Client:
    parts = urlsplit(dsn)
    if not parts.hostname:
        raise ClickHouseSinkError(
            f"ClickHouse DSN {mask_dsn(dsn)!r} names no host: use http(s)://user:password@host:8123[/database]"
        )
    server_dsn = urlunsplit((parts.scheme, parts.netloc, "", parts.query, ""))
    try:
        return clickhouse_connect.get_client(dsn=server_dsn)
    except Exception as exc:
        transient = is_transient(exc)
        if transient:
            fix = "check that the server is running and reachable from here (host, port, TLS, firewall)"
        else:
            fix = fix_for(exc) or "check the DSN (scheme, host, port, user, password)"
        raise ClickHouseSinkError(
            f"cannot connect to ClickHouse at {mask_dsn(dsn)}: {exc} -> fix: {fix}", transient=transient
        ) from exc


def connect(dsn: str, database: str = "default") -> Client:
    """Open a clickhouse-connect client for ``dsn`` and select the database.

    ``chdb:///abs/path`` opens embedded chDB (creating the directory);
    ``http(s)://user:password@host:port[/database]`` a server. The database in an
    HTTP DSN path wins over ``database``; naming two different non-default ones is
    an error. The database is created if missing. Errors are
    :class:`ClickHouseSinkError` naming the DSN (password masked) and the fix;
    ``transient`` is set when retrying may help (server unreachable).
    """
    scheme = urlsplit(dsn).scheme.lower()
    if scheme == "chdb":
        client = _open_chdb(dsn)
        db = database
    elif scheme in ("http", "https"):
        dsn_db = _dsn_database(dsn)
        if dsn_db and database not in ("default", dsn_db):
            raise ClickHouseSinkError(
                f"ClickHouse DSN {mask_dsn(dsn)} names database {dsn_db!r} but the settings name {database!r}: "
                "name it in one place only"
            )
        client = _open_http(dsn)
        db = dsn_db or database
    else:
        raise ClickHouseSinkError(
            f"ClickHouse DSN {mask_dsn(dsn)!r} is not supported: use chdb:///absolute/path "
            "or http(s)://user:password@host:8123[/database]"
        )
    try:
        exists = client.command("SELECT count() FROM system.databases WHERE name = {db:String}", parameters={"db": db})
        if not exists:
            client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(db)}")
            logger.info("created ClickHouse database %s at %s", db, mask_dsn(dsn))
        client.database = db
    except Exception as exc:
        client.close()
        raise ClickHouseSinkError(
            f"cannot select database {db!r} at {mask_dsn(dsn)}: {describe_error(exc)}",
            transient=is_transient(exc),
        ) from exc
    return client
