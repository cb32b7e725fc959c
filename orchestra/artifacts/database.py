"""The artifact index's SQLite side, all blocking: called only in worker threads.

The schema and its migrations, the row mapping, the queries (listing, lineage, the
total size), on the SQLite shape every orchestra database takes (:mod:`orchestra.catalog.sqlite`:
one connection per operation, ``BEGIN IMMEDIATE`` transactions, ``synchronous = FULL``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from orchestra.artifacts.model import Artifact, Filters, LineageNode
from orchestra.catalog import sqlite
from orchestra.errors import CatalogError

T = TypeVar("T")

DB_NAME: Final = "index.sqlite3"
"""The index's file name inside the artifact directory."""

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE artifacts (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,
            id         TEXT UNIQUE NOT NULL,
            kind       TEXT NOT NULL,
            media_type TEXT NOT NULL,
            size_bytes INTEGER NOT NULL CHECK (size_bytes >= 0),
            created_at TEXT NOT NULL,
            session_id TEXT,
            task_id    TEXT,
            meta       TEXT NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX artifacts_by_session ON artifacts (session_id, seq)",
        "CREATE INDEX artifacts_by_task ON artifacts (task_id, seq)",
        "CREATE INDEX artifacts_by_kind ON artifacts (kind, seq)",
        """
        CREATE TABLE tags (
            artifact TEXT NOT NULL,
            tag      TEXT NOT NULL,
            PRIMARY KEY (artifact, tag)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX tags_by_tag ON tags (tag, artifact)",
        """
        CREATE TABLE parents (
            child  TEXT NOT NULL,
            parent TEXT NOT NULL,
            PRIMARY KEY (child, parent)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX parents_by_parent ON parents (parent, child)",
    ),
)
"""``MIGRATIONS[v]`` takes the schema from version v to v + 1. ``tags`` and ``parents`` name
artifacts by id; :func:`delete` removes an artifact's links with it (SQLite's foreign keys
are not switched on)."""

SCHEMA_VERSION: Final = len(MIGRATIONS)
COLUMNS: Final = "seq, id, kind, media_type, size_bytes, created_at, session_id, task_id, meta"


def initialise(db_path: Path, conn: sqlite3.Connection) -> None:
    """WAL mode, then the schema migrated to :data:`SCHEMA_VERSION`."""
    sqlite.initialise(db_path, conn, MIGRATIONS, what="artifact index", error=CatalogError)


def connected(db_path: Path, operation: Callable[[sqlite3.Connection], T]) -> T:
    """Open a connection, run ``operation`` on it, close it (CatalogError on failure)."""
    return sqlite.connected(db_path, operation, what="artifact index", error=CatalogError)


def row_artifact(conn: sqlite3.Connection, row: Sequence[Any]) -> Artifact:
    """The artifact of a row selected with :data:`COLUMNS`, with its tags and parents."""
    id = row[1]
    tags = [r[0] for r in conn.execute("SELECT tag FROM tags WHERE artifact = ?", (id,))]
    parents = [r[0] for r in conn.execute("SELECT parent FROM parents WHERE child = ?", (id,))]
    return Artifact(
        id=id,
        kind=row[2],
        media_type=row[3],
        size_bytes=row[4],
        created_at=row[5],
        session_id=row[6],
        task_id=row[7],
        meta=json.loads(row[8]),
        tags=tuple(sorted(tags)),
        parents=tuple(sorted(parents)),
    )


def select(conn: sqlite3.Connection, id: str) -> Artifact | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM artifacts WHERE id = ?", (id,)).fetchone()
    return None if row is None else row_artifact(conn, row)


def used_bytes(conn: sqlite3.Connection) -> int:
    """The size of every artifact kept, together."""
    return int(conn.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM artifacts").fetchone()[0])


def missing(conn: sqlite3.Connection, ids: Sequence[str]) -> list[str]:
    """Those of ``ids`` that name no artifact."""
    return [
        id
        for id in ids
        if conn.execute("SELECT 1 FROM artifacts WHERE id = ?", (id,)).fetchone() is None
    ]


def insert(conn: sqlite3.Connection, artifact: Artifact) -> None:
    meta = json.dumps(dict(artifact.meta), separators=(",", ":"), ensure_ascii=False)
    conn.execute(
        "INSERT INTO artifacts (id, kind, media_type, size_bytes, created_at, session_id, "
        "task_id, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            artifact.id,
            artifact.kind,
            artifact.media_type,
            artifact.size_bytes,
            artifact.created_at,
            artifact.session_id,
            artifact.task_id,
            meta,
        ),
    )


def add_links(
    conn: sqlite3.Connection, id: str, tags: Sequence[str], parents: Sequence[str]
) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO tags (artifact, tag) VALUES (?, ?)", [(id, t) for t in tags]
    )
    conn.executemany(
        "INSERT OR IGNORE INTO parents (child, parent) VALUES (?, ?)",
        [(id, p) for p in parents if p != id],
    )


def remove_tags(conn: sqlite3.Connection, id: str, tags: Sequence[str]) -> None:
    conn.executemany("DELETE FROM tags WHERE artifact = ? AND tag = ?", [(id, t) for t in tags])


def children(conn: sqlite3.Connection, id: str) -> list[str]:
    rows = conn.execute("SELECT child FROM parents WHERE parent = ? ORDER BY child", (id,))
    return [r[0] for r in rows]


def delete(conn: sqlite3.Connection, ids: Sequence[str]) -> None:
    """Delete the rows of ``ids`` with their tags and links (either way)."""
    for id in ids:
        conn.execute("DELETE FROM tags WHERE artifact = ?", (id,))
        conn.execute("DELETE FROM parents WHERE child = ? OR parent = ?", (id, id))
        conn.execute("DELETE FROM artifacts WHERE id = ?", (id,))


def walk(conn: sqlite3.Connection, id: str, up: bool, limit: int) -> tuple[list[LineageNode], bool]:
    """The artifacts reached from ``id`` following parent links (``up``) or child links,
    nearest first, each once at its least depth; at most ``limit``, and whether there were
    more."""
    start, follow = ("child", "parent") if up else ("parent", "child")
    rows = conn.execute(
        f"""
        WITH RECURSIVE reached (id, depth) AS (
            SELECT {follow}, 1 FROM parents WHERE {start} = :id
            UNION
            SELECT p.{follow}, r.depth + 1 FROM parents p JOIN reached r ON p.{start} = r.id
            WHERE r.depth < :deepest
        )
        SELECT r.id, MIN(r.depth) AS depth, a.kind FROM reached r
        JOIN artifacts a ON a.id = r.id
        WHERE r.id != :id
        GROUP BY r.id ORDER BY depth, r.id LIMIT :limit
        """,
        {"id": id, "limit": limit + 1, "deepest": 10_000},
    ).fetchall()
    nodes = [
        LineageNode(
            row[0],
            row[2],
            row[1],
            tuple(
                r[0]
                for r in conn.execute(
                    "SELECT parent FROM parents WHERE child = ? ORDER BY parent", (row[0],)
                )
            ),
        )
        for row in rows[:limit]
    ]
    return nodes, len(rows) > limit


def listing(
    conn: sqlite3.Connection, filters: Filters, before: int | None, limit: int
) -> tuple[list[Artifact], int | None]:
    """Artifacts matching ``filters`` with ``seq < before``, newest first; at most ``limit``,
    and the seq to continue from (None at the end)."""
    where: list[str] = []
    args: list[object] = []
    if before is not None:
        where.append("a.seq < ?")
        args.append(before)
    for column in ("kind", "session_id", "task_id"):
        value = getattr(filters, column)
        if value is not None:
            where.append(f"a.{column} = ?")
            args.append(value)
    if filters.tag is not None:
        where.append("EXISTS (SELECT 1 FROM tags t WHERE t.artifact = a.id AND t.tag = ?)")
        args.append(filters.tag)
    if filters.parent is not None:
        where.append("EXISTS (SELECT 1 FROM parents p WHERE p.child = a.id AND p.parent = ?)")
        args.append(filters.parent)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    columns = ", ".join(f"a.{c.strip()}" for c in COLUMNS.split(","))
    rows = conn.execute(
        f"SELECT {columns} FROM artifacts a {clause} ORDER BY a.seq DESC LIMIT ?",
        (*args, limit + 1),
    ).fetchall()
    found = [row_artifact(conn, row) for row in rows[:limit]]
    next_seq = rows[limit - 1][0] if len(rows) > limit else None
    return found, next_seq


def all_sizes(conn: sqlite3.Connection) -> dict[str, int]:
    """Every artifact's id and size (for reconciling with the content files)."""
    return dict(conn.execute("SELECT id, size_bytes FROM artifacts").fetchall())
