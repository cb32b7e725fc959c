"""The catalog's SQLite side, all blocking: called only in worker threads.

The database's file name, its schema and the migrations that build it, the mapping of a
row to a :class:`~orchestra.catalog.model.CatalogModel`, the connection every operation
opens and closes (:func:`connected`), and the one transaction shape every change takes
(:func:`write`). The guarantees they give are in :mod:`orchestra.catalog.store`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from orchestra.catalog.model import CatalogModel, ModelState, TrustState
from orchestra.errors import CatalogError

T = TypeVar("T")

DB_NAME: Final = "catalog.sqlite3"
"""The database's file name inside the data directory."""

BUSY_TIMEOUT_S: Final = 30.0
"""How long a connection waits for another connection's lock before failing."""

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 0 -> 1: the models table.
    (
        """
        CREATE TABLE models (
            id            TEXT PRIMARY KEY NOT NULL,
            path          TEXT NOT NULL,
            sha256        TEXT,
            digest        TEXT,
            trust_state   TEXT NOT NULL
                          CHECK (trust_state IN ('verified', 'mismatch', 'unverified')),
            state         TEXT NOT NULL CHECK (state IN ('active', 'retired')),
            size_bytes    INTEGER CHECK (size_bytes IS NULL OR size_bytes >= 0),
            registered_at TEXT NOT NULL,
            verified_at   TEXT
        )
        """,
        "CREATE INDEX models_by_registration ON models (registered_at, id)",
    ),
)
"""``MIGRATIONS[v]`` is the list of statements taking the schema from version v to v + 1."""

SCHEMA_VERSION: Final = len(MIGRATIONS)
"""The schema version this module writes (``PRAGMA user_version``)."""

COLUMNS: Final = (
    "id, path, sha256, digest, trust_state, state, size_bytes, registered_at, verified_at"
)
"""The models table's columns, in the order :func:`row_model` reads them."""


def row_model(row: Sequence[Any]) -> CatalogModel:
    """A model from a row selected with :data:`COLUMNS`."""
    return CatalogModel(
        id=row[0],
        path=row[1],
        sha256=row[2],
        digest=row[3],
        trust_state=TrustState(row[4]),
        state=ModelState(row[5]),
        size_bytes=row[6],
        registered_at=row[7],
        verified_at=row[8],
    )


def make_data_dir(data_dir: Path) -> None:
    """Blocking: create the data directory, mode 0o700, unless it exists."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CatalogError(f"cannot create the catalog directory {data_dir}: {exc}") from exc


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


def select(conn: sqlite3.Connection, id: str) -> CatalogModel | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM models WHERE id = ?", (id,)).fetchone()
    return None if row is None else row_model(row)


def connected(db_path: Path, operation: Callable[[sqlite3.Connection], T]) -> T:
    """Blocking: open a connection, run ``operation`` on it, close it; sqlite errors
    become CatalogError naming the database."""
    try:
        # isolation_level=None: the sqlite3 module opens no transactions of its own;
        # every write says BEGIN IMMEDIATE itself (see write).
        conn = sqlite3.connect(db_path, isolation_level=None)
    except sqlite3.Error as exc:
        raise CatalogError(f"cannot open the catalog database {db_path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA synchronous = FULL")
        return operation(conn)
    except sqlite3.Error as exc:
        raise CatalogError(f"catalog database {db_path}: {exc}") from exc
    finally:
        conn.close()


def initialise(db_path: Path, conn: sqlite3.Connection) -> None:
    """Blocking: WAL mode, then the schema migrated to :data:`SCHEMA_VERSION`."""
    # WAL is persistent, a property of the file. Where it is refused (some network file
    # systems) SQLite keeps its rollback journal, which gives the same atomicity; only
    # readers then wait for writers. So the answer is not checked.
    conn.execute("PRAGMA journal_mode = WAL").fetchone()

    def migrate(conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CatalogError(
                f"catalog database {db_path} has schema version {version}, newer "
                f"than this orchestra's {SCHEMA_VERSION}; refusing to touch it"
            )
        for steps in MIGRATIONS[version:]:
            for statement in steps:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    write(conn, migrate)
