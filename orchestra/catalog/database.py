"""The catalog's SQLite side, all blocking: called only in worker threads.

The database's file name, its schema and the migrations that build it, the mapping of a
row to a :class:`~orchestra.catalog.model.CatalogModel`, the connection every operation
opens and closes (:func:`connected`), and the one transaction shape every change takes
(:func:`write`), from :mod:`orchestra.catalog.sqlite`. The guarantees they give are in
:mod:`orchestra.catalog.store`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from orchestra.catalog import sqlite
from orchestra.catalog.model import CatalogModel, ModelState, TrustState
from orchestra.catalog.sqlite import BUSY_TIMEOUT_S as BUSY_TIMEOUT_S
from orchestra.catalog.sqlite import write as write
from orchestra.errors import CatalogError

T = TypeVar("T")

DB_NAME: Final = "catalog.sqlite3"
"""The database's file name inside the data directory."""


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
    sqlite.make_dir(data_dir, what="catalog directory", error=CatalogError)


def select(conn: sqlite3.Connection, id: str) -> CatalogModel | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM models WHERE id = ?", (id,)).fetchone()
    return None if row is None else row_model(row)


def connected(db_path: Path, operation: Callable[[sqlite3.Connection], T]) -> T:
    """Blocking: open a connection, run ``operation`` on it, close it; sqlite errors
    become CatalogError naming the database."""
    return sqlite.connected(db_path, operation, what="catalog database", error=CatalogError)


def initialise(db_path: Path, conn: sqlite3.Connection) -> None:
    """Blocking: WAL mode, then the schema migrated to :data:`SCHEMA_VERSION`."""
    sqlite.initialise(db_path, conn, MIGRATIONS, what="catalog database", error=CatalogError)
