"""The tools' audit: every call, allowed, refused or failed, in SQLite in the data directory.

::

    <data_dir>/
    ├── tools-audit.sqlite3        one ``calls`` table, schema version in ``PRAGMA user_version``
    ├── tools-audit.sqlite3-wal    SQLite's write-ahead log (present while in use)
    └── tools-audit.sqlite3-shm

Each call is one row: when, who (the authenticated identity), its session and task, the
tool, method and URL (secrets already redacted by the caller), the decision (``allowed``:
it was sent and answered, whatever the status; ``refused``: the policy, the hook, or a bad
URL said no; ``failed``: upstream broke, timed out, or the caller went away), the rule that
refused it, the upstream status, body bytes read, time taken, and the error's code and
message. The table keeps the newest ``max_rows`` rows: each insert deletes the rows that
fell out of that window (ids only grow, so that is one range delete on the primary key).

Guarantees, as :mod:`orchestra.catalog.store` gives them: every write is one ``BEGIN
IMMEDIATE`` transaction in WAL mode with ``synchronous = FULL``, so a committed row is on
disk and a crash leaves the last committed state; all SQLite work runs in a worker thread
(:func:`trio.to_thread.run_sync`), one at a time per :class:`AuditLog`, each operation on a
connection of its own. Under cancellation an operation either has not started (nothing
written, :exc:`trio.Cancelled` raised) or runs to its end in its thread (the row is
committed; the cancellation is delivered at the caller's next checkpoint). A database that
cannot be opened, read or written raises :class:`~orchestra.errors.AuditError`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import trio

from orchestra.catalog import sqlite
from orchestra.errors import AuditError

T = TypeVar("T")

DB_NAME: Final = "tools-audit.sqlite3"
"""The database's file name inside the data directory."""
DECISIONS: Final = ("allowed", "refused", "failed")
"""What happened to a call."""
MAX_PAGE: Final = 1000
"""The most entries one page may hold."""

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE calls (
            id             INTEGER PRIMARY KEY AUTOINCREMENT,
            at             TEXT NOT NULL,
            who            TEXT NOT NULL,
            session_id     TEXT,
            task_id        TEXT,
            tool           TEXT NOT NULL,
            method         TEXT,
            url            TEXT,
            decision       TEXT NOT NULL CHECK (decision IN ('allowed', 'refused', 'failed')),
            rule           TEXT,
            status         INTEGER,
            bytes          INTEGER,
            time_ms        REAL,
            error_code     TEXT,
            error          TEXT,
            correlation_id TEXT
        )
        """,
        "CREATE INDEX calls_by_tool ON calls (tool, id)",
        "CREATE INDEX calls_by_decision ON calls (decision, id)",
        "CREATE INDEX calls_by_who ON calls (who, id)",
        "CREATE INDEX calls_by_session ON calls (session_id, id)",
        "CREATE INDEX calls_by_task ON calls (task_id, id)",
    ),
)
"""``MIGRATIONS[v]`` takes the schema from version v to v + 1."""
SCHEMA_VERSION: Final = len(MIGRATIONS)

_COLUMNS: Final = (
    "id, at, who, session_id, task_id, tool, method, url, decision, rule, status, bytes, "
    "time_ms, error_code, error, correlation_id"
)
FILTERS: Final = ("tool", "decision", "who", "session_id", "task_id")
"""The columns a page may be filtered on (equality)."""


@attrs.frozen(kw_only=True)
class AuditEntry:
    """One call in the audit (see the module docstring for what each field holds)."""

    at: str
    """When the call ended: RFC 3339, UTC, milliseconds."""
    who: str
    tool: str
    decision: str
    method: str | None = None
    url: str | None = None
    session_id: str | None = None
    task_id: str | None = None
    rule: str | None = None
    """The ``policy_label`` of a refusal (``tools.policy.ports``, ``tools.policy.hook``)."""
    status: int | None = None
    """The upstream's HTTP status (the last one, after redirects)."""
    bytes: int | None = None
    time_ms: float | None = None
    error_code: str | None = None
    error: str | None = None
    correlation_id: str | None = None
    id: int | None = None
    """Set once recorded; ids grow with time."""

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def _row(self) -> tuple[Any, ...]:
        return (
            self.at, self.who, self.session_id, self.task_id, self.tool, self.method,
            self.url, self.decision, self.rule, self.status, self.bytes, self.time_ms,
            self.error_code, self.error, self.correlation_id,
        )  # fmt: skip


def _entry(row: Sequence[Any]) -> AuditEntry:
    (id, at, who, session_id, task_id, tool, method, url, decision, rule, status, size,
     time_ms, error_code, error, correlation_id) = row  # fmt: skip
    return AuditEntry(
        id=id, at=at, who=who, session_id=session_id, task_id=task_id, tool=tool,
        method=method, url=url, decision=decision, rule=rule, status=status, bytes=size,
        time_ms=time_ms, error_code=error_code, error=error, correlation_id=correlation_id,
    )  # fmt: skip


@attrs.frozen(kw_only=True)
class AuditQuery:
    """Which entries a page holds: those matching every filter given, newest first,
    older than ``before`` (an entry id: the previous page's cursor), ``limit`` of them."""

    tool: str | None = None
    decision: str | None = None
    who: str | None = None
    session_id: str | None = None
    task_id: str | None = None
    limit: int = 50
    before: int | None = None


@attrs.frozen
class AuditPage:
    """A page of entries, newest first, and the cursor of the next one (None at the end)."""

    entries: tuple[AuditEntry, ...]
    next_cursor: str | None


def rfc3339_ms(seconds: float) -> str:
    """``seconds`` since the epoch as RFC 3339 in UTC with milliseconds."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds * 1000) % 1000:03d}Z"


# -- the blocking side (worker threads only) ---------------------------------------------------


_WHAT: Final = "tools' audit database"


def _connected(db_path: Path, operation: Callable[[sqlite3.Connection], T]) -> T:
    return sqlite.connected(db_path, operation, what=_WHAT, error=AuditError)


def _initialise(db_path: Path, conn: sqlite3.Connection) -> None:
    sqlite.initialise(db_path, conn, MIGRATIONS, what=_WHAT, error=AuditError)


def _make_dir(data_dir: Path) -> None:
    sqlite.make_dir(data_dir, what="data directory", error=AuditError)


class AuditLog:
    """The audit of one data directory (the module docstring has its layout and
    guarantees). Make one with :meth:`open`; it holds no open file between calls and needs
    no closing."""

    def __init__(self, db_path: Path, max_rows: int) -> None:
        """Not for direct use: call :meth:`open`."""
        self._db_path = db_path
        self._max_rows = max_rows
        self._limiter = trio.CapacityLimiter(1)

    @property
    def db_path(self) -> Path:
        return self._db_path

    @classmethod
    async def open(cls, data_dir: Path, *, max_rows: int) -> AuditLog:
        """Open (creating the directory, mode 0o700, and the database when missing) the
        audit in ``data_dir``, keeping the newest ``max_rows`` calls. Raises
        :class:`AuditError` when it cannot."""
        audit = cls(Path(data_dir) / DB_NAME, max_rows)
        await trio.to_thread.run_sync(_make_dir, Path(data_dir), limiter=audit._limiter)
        await audit._run(lambda conn: _initialise(audit._db_path, conn))
        return audit

    async def record(self, entry: AuditEntry) -> AuditEntry:
        """Add ``entry``, dropping the rows beyond the newest ``max_rows``; the entry with
        its id."""
        keep = self._max_rows

        def insert(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                f"INSERT INTO calls ({_COLUMNS.removeprefix('id, ')}) "
                f"VALUES ({', '.join('?' * 15)})",
                entry._row(),
            )
            new_id = cursor.lastrowid
            assert new_id is not None
            conn.execute("DELETE FROM calls WHERE id <= ?", (new_id - keep,))
            return new_id

        new_id = await self._run(lambda conn: sqlite.write(conn, insert))
        return attrs.evolve(entry, id=new_id)

    async def page(self, query: AuditQuery) -> AuditPage:
        """The entries ``query`` asks for, newest first, and the next page's cursor."""
        where, values = [], []
        for name in FILTERS:
            value = getattr(query, name)
            if value is not None:
                where.append(f"{name} = ?")
                values.append(value)
        if query.before is not None:
            where.append("id < ?")
            values.append(query.before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        limit = max(1, min(query.limit, MAX_PAGE))

        def select(conn: sqlite3.Connection) -> list[AuditEntry]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM calls {clause} ORDER BY id DESC LIMIT ?",
                (*values, limit + 1),
            )
            return [_entry(row) for row in rows]

        found = await self._run(select)
        more = len(found) > limit
        entries = tuple(found[:limit])
        cursor = str(entries[-1].id) if more and entries else None
        return AuditPage(entries, cursor)

    async def count(self) -> int:
        """How many calls the audit holds."""
        return int(
            await self._run(lambda conn: conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0])
        )

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        return await trio.to_thread.run_sync(
            _connected, self._db_path, operation, limiter=self._limiter
        )
