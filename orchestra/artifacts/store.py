"""The artifact registry: content-addressed artifacts with tags and lineage, the
:class:`ArtifactStore`.

It owns one directory in the data directory::

    <data_dir>/artifacts/           mode 0o700
    ├── index.sqlite3               the index: artifacts, their tags, their parent links
    │                               (WAL mode; schema version in PRAGMA user_version)
    ├── objects/ab/cdef…            each content once, named by its SHA-256
    └── tmp/                        writes in progress (emptied at start)

Guarantees:

- **Content-addressed.** An artifact's id is ``sha256:`` and the hex SHA-256 of its bytes.
  Putting the same bytes again changes nothing but the tags and parents, which merge; the
  first put's kind, media type, session, task and meta stay.
- **Nothing half-written is visible, nothing acknowledged is lost.** A put writes the
  content file first (temporary file, fsync, rename, fsync of the directory: see
  :mod:`orchestra.artifacts.blobs`) and then commits its index row (``synchronous =
  FULL``); only then does it return. An artifact is visible only through its row, and a
  row is committed only after its content is durable. A crash between the two leaves a
  content file no row names; a crash in a delete (rows first, files after) the same. At
  :meth:`ArtifactStore.open` these are reconciled: unfinished writes and files without a
  row are deleted, and a row whose file is missing or the wrong size (a disk damaged
  behind orchestra's back: it cannot happen by a crash) is dropped with an error line.
- **Lineage stays a graph without cycles.** A put's parents must exist (else 400); a
  parent that is already a descendant is refused (409). Deleting an artifact that others
  name as a parent is refused (409) unless ``cascade``, which deletes its descendants too.
- **Bounded.** One artifact may hold at most ``max_artifact_bytes`` (413 beyond), all of
  them together ``max_total_bytes`` (507 beyond; the same content again costs nothing).
- **Off the event loop, one at a time.** All file and SQLite work runs in a worker thread,
  one at a time per store (:class:`trio.CapacityLimiter`), so the limits are checked and
  charged atomically. One orchestra process owns a data directory's artifacts.

Errors: bad arguments and unknown ids are :class:`~orchestra.errors.Refusal`; a database or
file that cannot be read or written is :class:`~orchestra.errors.CatalogError`.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import trio

from orchestra.artifacts import blobs, database
from orchestra.artifacts.model import (
    Artifact,
    Filters,
    Lineage,
    Page,
    artifact_id,
    normal_tags,
)
from orchestra.catalog.sqlite import write
from orchestra.errors import ErrorCode, Refusal

T = TypeVar("T")
log = logging.getLogger("orchestra.artifacts")

DIR_NAME: Final = "artifacts"
"""The registry's directory inside the data directory."""
LINEAGE_LIMIT: Final = 1000
"""The most ancestors (and descendants) a lineage answer lists."""


@attrs.frozen
class Limits:
    """How much the registry may hold: one artifact, and all of them."""

    max_artifact_bytes: int
    max_total_bytes: int


@attrs.frozen
class Usage:
    """What the registry holds now."""

    artifacts: int
    used_bytes: int
    limits: Limits


@attrs.frozen
class Reconciled:
    """What :meth:`ArtifactStore.open` found and mended."""

    unfinished_writes: int
    orphan_files: int
    rows_without_content: tuple[str, ...]


def _not_found(id: str) -> Refusal:
    return Refusal(ErrorCode.NOT_FOUND, f"no artifact {id!r}")


def _timestamp(seconds: float) -> str:
    millis = int(seconds * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class ArtifactStore:
    """The artifact registry of one data directory (see the module docstring).

    Owns ``<data_dir>/artifacts/``; receives puts, reads, listings, tag changes and
    deletes; holds no open file between calls. Make one with :meth:`open`.

    Under cancellation, every method either makes its whole change or none of it: a call
    cancelled before its worker thread starts changes nothing; once the thread runs it is
    not abandoned (``trio.to_thread.run_sync`` is not cancellable), so its change completes
    and the cancellation arrives at the caller's next checkpoint.
    """

    def __init__(self, root: Path, limits: Limits, clock: Callable[[], float]) -> None:
        """Not for direct use: call :meth:`open`."""
        self._root = root
        self._db_path = root / database.DB_NAME
        self._limits = limits
        self._clock = clock
        self._limiter = trio.CapacityLimiter(1)
        self.reconciled = Reconciled(0, 0, ())
        """What :meth:`open` found and mended."""

    @property
    def root(self) -> Path:
        return self._root

    @property
    def limits(self) -> Limits:
        return self._limits

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.time,
    ) -> ArtifactStore:
        """Open (creating when missing) the registry in ``data_dir`` and reconcile its
        index with its content files (see the module docstring)."""
        store = cls(Path(data_dir) / DIR_NAME, limits, clock)
        await trio.to_thread.run_sync(blobs.make_dirs, store._root, limiter=store._limiter)
        await store._run(functools.partial(database.initialise, store._db_path))
        store.reconciled = reconciled = await store._blocking(store._reconcile)
        usage = await store.usage()
        if reconciled.rows_without_content:
            log.error(
                "artifacts: %d index rows had no content file (or the wrong size) and were "
                "dropped: %s",
                len(reconciled.rows_without_content),
                ", ".join(reconciled.rows_without_content[:10]),
            )
        log.info(
            "artifacts: %d kept in %s, %d of %d bytes used; at start %d unfinished write(s) "
            "and %d file(s) without an index row were removed",
            usage.artifacts,
            store._root,
            usage.used_bytes,
            limits.max_total_bytes,
            reconciled.unfinished_writes,
            reconciled.orphan_files,
        )
        return store

    # -- reading ---------------------------------------------------------------------------

    async def find(self, id: str) -> Artifact | None:
        return await self._run(lambda conn: database.select(conn, id))

    async def get(self, id: str) -> Artifact:
        """The artifact ``id``; Refusal(NOT_FOUND) when there is none."""
        found = await self.find(id)
        if found is None:
            raise _not_found(id)
        return found

    async def read(self, id: str) -> tuple[Artifact, bytes]:
        """The artifact ``id`` and its content (checked against its id)."""

        def read(conn: sqlite3.Connection) -> tuple[Artifact, bytes]:
            found = database.select(conn, id)
            if found is None:
                raise _not_found(id)
            return found, blobs.read(self._root, id)

        return await self._run(read)

    async def list(self, filters: Filters, *, limit: int = 50, cursor: str | None = None) -> Page:
        """Artifacts matching ``filters``, newest first, ``limit`` at a time; ``cursor`` is a
        page's ``next_cursor`` (Refusal INVALID_PARAMS when it is not one)."""
        before = None
        if cursor is not None:
            if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
                raise Refusal(ErrorCode.INVALID_PARAMS, "cursor: not a cursor this server gave")
            before = int(cursor)
        found, next_seq = await self._run(
            lambda conn: database.listing(conn, filters, before, limit)
        )
        return Page(tuple(found), None if next_seq is None else str(next_seq))

    async def lineage(self, id: str, *, limit: int = LINEAGE_LIMIT) -> Lineage:
        """What ``id`` was made from and what was made from it, nearest first."""

        def walk(conn: sqlite3.Connection) -> Lineage:
            if database.select(conn, id) is None:
                raise _not_found(id)
            ancestors, more_up = database.walk(conn, id, True, limit)
            descendants, more_down = database.walk(conn, id, False, limit)
            return Lineage(id, tuple(ancestors), tuple(descendants), more_up or more_down)

        return await self._run(walk)

    async def usage(self) -> Usage:
        def usage(conn: sqlite3.Connection) -> Usage:
            count = conn.execute("SELECT COUNT(*) FROM artifacts").fetchone()[0]
            return Usage(count, database.used_bytes(conn), self._limits)

        return await self._run(usage)

    # -- changing --------------------------------------------------------------------------

    async def put(
        self,
        content: bytes,
        *,
        kind: str,
        media_type: str,
        tags: Iterable[str] = (),
        parents: Iterable[str] = (),
        session_id: str | None = None,
        task_id: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> tuple[Artifact, bool]:
        """Keep ``content``; the artifact and whether it is new (False: the same content was
        there, and ``tags`` and ``parents`` were merged into it).

        The arguments are expected checked (:mod:`orchestra.artifacts.model`). Refusals:
        ARTIFACT_TOO_LARGE, STORAGE_FULL (with the figures in ``details``), INVALID_PARAMS
        for an unknown parent, CONFLICT for a parent that would make a cycle.
        """
        size = len(content)
        if size > self._limits.max_artifact_bytes:
            raise Refusal(
                ErrorCode.ARTIFACT_TOO_LARGE,
                f"the artifact is {size} bytes; artifacts.max_artifact_bytes is "
                f"{self._limits.max_artifact_bytes}",
                details={"size_bytes": size, "max_artifact_bytes": self._limits.max_artifact_bytes},
            )
        wanted = Artifact(
            id="",
            kind=kind,
            media_type=media_type,
            size_bytes=size,
            created_at="",
            tags=normal_tags(tags),
            parents=tuple(sorted(set(parents))),
            session_id=session_id,
            task_id=task_id,
            meta=dict(meta or {}),
        )
        return await self._blocking(functools.partial(self._put, content, wanted))

    async def retag(self, id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> Artifact:
        """Add and remove tags of ``id`` (removing one it lacks is no error)."""
        adding, removing = normal_tags(add), normal_tags(remove)

        def retag(conn: sqlite3.Connection) -> Artifact:
            if database.select(conn, id) is None:
                raise _not_found(id)
            database.remove_tags(conn, id, removing)
            database.add_links(conn, id, adding, ())
            found = database.select(conn, id)
            assert found is not None
            return found

        return await self._run(lambda conn: write(conn, retag))

    async def delete(self, id: str, *, cascade: bool = False) -> tuple[str, ...]:
        """Delete ``id`` (and, with ``cascade``, everything made from it); the ids deleted,
        ``id`` first. Refusal CONFLICT when others name it as a parent and not ``cascade``."""
        return await self._blocking(functools.partial(self._delete, id, cascade))

    # -- the blocking work -----------------------------------------------------------------

    def _put(self, content: bytes, wanted: Artifact) -> tuple[Artifact, bool]:
        id = artifact_id(content)

        def check(conn: sqlite3.Connection) -> Artifact | None:
            if unknown := database.missing(conn, wanted.parents):
                problem = f"parents: no artifact {', '.join(unknown)}"
                raise Refusal(
                    ErrorCode.INVALID_PARAMS, problem, problems=(problem,), param="parents"
                )
            existing = database.select(conn, id)
            if existing is None:
                used = database.used_bytes(conn)
                total = self._limits.max_total_bytes
                if used + wanted.size_bytes > total:
                    raise Refusal(
                        ErrorCode.STORAGE_FULL,
                        f"keeping {wanted.size_bytes} more bytes would take the artifacts "
                        f"past artifacts.max_total_bytes ({used} of {total} used)",
                        details={
                            "size_bytes": wanted.size_bytes,
                            "used_bytes": used,
                            "max_total_bytes": total,
                        },
                    )
            return existing

        def commit(conn: sqlite3.Connection) -> tuple[Artifact, bool]:
            existing = check(conn)
            if existing is not None:
                descendants = {node.id for node in database.walk(conn, id, False, 1_000_000)[0]}
                if looped := sorted(descendants & set(wanted.parents)):
                    raise Refusal(
                        ErrorCode.CONFLICT,
                        f"{', '.join(looped)} cannot be a parent of {id}: it is made from it",
                    )
            else:
                database.insert(
                    conn, attrs.evolve(wanted, id=id, created_at=_timestamp(self._clock()))
                )
            database.add_links(conn, id, wanted.tags, wanted.parents)
            found = database.select(conn, id)
            assert found is not None
            return found, existing is None

        def put(conn: sqlite3.Connection) -> tuple[Artifact, bool]:
            check(conn)  # refuse before writing anything
            if not blobs.exists(self._root, id, len(content)):
                blobs.write(self._root, id, content)
            return write(conn, commit)

        return database.connected(self._db_path, put)

    def _delete(self, id: str, cascade: bool) -> tuple[str, ...]:
        def delete(conn: sqlite3.Connection) -> tuple[str, ...]:
            if database.select(conn, id) is None:
                raise _not_found(id)
            made_from = database.children(conn, id)
            if made_from and not cascade:
                raise Refusal(
                    ErrorCode.CONFLICT,
                    f"{len(made_from)} artifact(s) name {id} as a parent; delete them first "
                    f"or ask for ?cascade=true",
                    details={"children": made_from},
                )
            doomed = (id, *(n.id for n in database.walk(conn, id, False, 1_000_000)[0]))
            database.delete(conn, doomed)
            return doomed

        doomed = database.connected(self._db_path, lambda conn: write(conn, delete))
        for gone in doomed:  # after the commit: a crash here leaves orphans, never holes
            blobs.remove(self._root, gone)
        return doomed

    def _reconcile(self) -> Reconciled:
        unfinished = blobs.clear_tmp(self._root)

        def reconcile(conn: sqlite3.Connection) -> tuple[str, ...]:
            sizes = database.all_sizes(conn)
            broken = tuple(
                sorted(id for id, size in sizes.items() if not blobs.exists(self._root, id, size))
            )
            if broken:
                database.delete(conn, broken)
            return broken

        broken = database.connected(self._db_path, lambda conn: write(conn, reconcile))
        kept = database.connected(self._db_path, database.all_sizes)
        orphans = 0
        for id in list(blobs.stored(self._root)):
            if id not in kept:
                blobs.remove(self._root, id)
                orphans += 1
        return Reconciled(unfinished, orphans, broken)

    async def _blocking(self, work: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(work, limiter=self._limiter)

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        return await self._blocking(lambda: database.connected(self._db_path, operation))
