"""The SQLite shape every database of orchestra's takes (the catalog, the artifact index,
the tools' audit), all blocking: called only in worker threads.

One connection per operation (:func:`connected`: ``busy_timeout``, ``synchronous = FULL``,
closed before the thread returns), every change one ``BEGIN IMMEDIATE`` transaction
(:func:`write`), WAL mode and a schema migrated by ``PRAGMA user_version``
(:func:`initialise`). Each database names itself (``what``) and the
:class:`~orchestra.errors.OrchestraError` its failures become (``error``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TypeVar

from orchestra.errors import OrchestraError

T = TypeVar("T")

BUSY_TIMEOUT_S: Final = 30.0
"""How long a connection waits for another connection's lock before failing."""

Migrations = Sequence[Sequence[str]]
"""``migrations[v]``: the statements taking a schema from version v to v + 1."""


def write(conn: sqlite3.Connection, change: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``change`` in one ``BEGIN IMMEDIATE`` transaction: all of it commits or none."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = change(conn)
    except Exception:  # in a worker thread: no Cancelled can arrive here
        # SQLite may already have rolled back (a full disk, say), and a failing ROLLBACK
        # must not hide the first error: closing the connection rolls back what is left.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def connected(
    db_path: Path,
    operation: Callable[[sqlite3.Connection], T],
    *,
    what: str,
    error: type[OrchestraError],
) -> T:
    """Open a connection, run ``operation`` on it, close it; sqlite errors become
    ``error`` naming ``what`` and the file."""
    try:
        # isolation_level=None: the sqlite3 module opens no transactions of its own;
        # every write says BEGIN IMMEDIATE itself (see write).
        conn = sqlite3.connect(db_path, isolation_level=None)
    except sqlite3.Error as exc:
        raise error(f"cannot open the {what} {db_path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA synchronous = FULL")
        return operation(conn)
    except sqlite3.Error as exc:
        raise error(f"{what} {db_path}: {exc}") from exc
    finally:
        conn.close()


def initialise(
    db_path: Path,
    conn: sqlite3.Connection,
    migrations: Migrations,
    *,
    what: str,
    error: type[OrchestraError],
) -> None:
    """WAL mode, then the schema migrated to ``len(migrations)`` in one transaction; a
    newer schema is refused with ``error``, not touched."""
    # WAL is persistent, a property of the file. Where it is refused (some network file
    # systems) SQLite keeps its rollback journal, which gives the same atomicity; only
    # readers then wait for writers. So the answer is not checked.
    conn.execute("PRAGMA journal_mode = WAL").fetchone()
    newest = len(migrations)

    def migrate(conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > newest:
            raise error(
                f"{what} {db_path} has schema version {version}, newer than this "
                f"orchestra's {newest}; refusing to touch it"
            )
        for steps in migrations[version:]:
            for statement in steps:
                conn.execute(statement)
        if version < newest:
            conn.execute(f"PRAGMA user_version = {newest}")

    write(conn, migrate)


def make_dir(path: Path, *, what: str, error: type[OrchestraError]) -> None:
    """Create ``path`` (mode 0o700, parents too) unless it exists."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create the {what} {path}: {exc}") from exc
