"""The model catalog: a local registry of GGUF model files, the :class:`Catalog`.

This module owns one SQLite database in the data directory::

    <data_dir>/                    created with mode 0o700 when missing
    ├── catalog.sqlite3            the catalog: one ``models`` table, schema version in
    │                              ``PRAGMA user_version``
    ├── catalog.sqlite3-wal        SQLite's write-ahead log (present while in use)
    └── catalog.sqlite3-shm        SQLite's shared-memory index of the log

Each model is one row keyed by its id: the path it was registered with, the sha256 the
caller expects, the digest last computed by :meth:`Catalog.verify`, the trust state that
follows from those two, whether it is active or retired, and when it was registered and
last verified.

Guarantees:

- **Atomic.** Every change is one SQLite transaction (``BEGIN IMMEDIATE`` … ``COMMIT``) in
  WAL mode with ``synchronous = FULL``. A process that dies mid-write, by crash or
  ``SIGKILL``, leaves the last committed state; SQLite discards the uncommitted frames of
  the log the next time the database is opened. A committed change is on disk.
- **Concurrent.** Writers in this process are serialised by the Catalog's
  :class:`trio.CapacityLimiter`; writers in other processes by SQLite's file locks, which
  each connection waits for up to :data:`~orchestra.catalog.database.BUSY_TIMEOUT_S`
  (``busy_timeout``) before giving up with :class:`CatalogError`. ``BEGIN IMMEDIATE``
  takes the write lock before the first read, so a read-check-write (as in
  :meth:`Catalog.register`) never acts on a stale read. Readers are never blocked by a
  writer (WAL).
- **Off the event loop.** All SQLite and file work runs in a worker thread via
  :func:`trio.to_thread.run_sync`.
- **Migratable.** ``PRAGMA user_version`` is the schema version;
  :data:`~orchestra.catalog.database.MIGRATIONS` holds the steps from each version to the
  next, applied in one transaction by :meth:`Catalog.open`. A database from a newer
  orchestra is refused, not touched.

Errors: bad arguments and unknown ids are :class:`~orchestra.errors.Refusal`
(``INVALID_PARAMS``, ``NOT_FOUND``, ``CONFLICT``), answered to the HTTP client as they are;
a database that cannot be read or written is :class:`CatalogError`.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import attrs
import trio

from orchestra.catalog.checks import id_problem, normal_sha256, path_problem, show
from orchestra.catalog.database import (
    COLUMNS,
    DB_NAME,
    connected,
    initialise,
    make_data_dir,
    row_model,
    select,
    write,
)
from orchestra.catalog.model import CatalogModel, ModelState, TrustState
from orchestra.engine.identity import model_digest
from orchestra.errors import ErrorCode, Refusal

T = TypeVar("T")


def _not_found(id: str) -> Refusal:
    return Refusal(ErrorCode.NOT_FOUND, f"no model {id!r} in the catalog")


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class Catalog:
    """The model catalog of one data directory (see the module docstring for the layout).

    A Catalog owns the database file ``<data_dir>/catalog.sqlite3`` together with any other
    Catalog, in this process or another, opened on the same directory; it receives nothing
    but that directory, and holds no open file between calls. Make one with
    :meth:`open`; it needs no closing.

    Every method runs its file and database work in worker threads, one thread at a time
    per Catalog. Under cancellation, every method either makes its whole change or none of
    it: a call cancelled before its write transaction starts changes nothing and raises
    :exc:`trio.Cancelled`; once the transaction's thread has started it is not abandoned
    (``trio.to_thread.run_sync`` is not cancellable), so the change commits and the
    cancellation is delivered at the caller's next checkpoint. So a caller that saw
    ``Cancelled`` must read the catalog to learn whether its change happened.
    """

    def __init__(self, db_path: Path, *, clock: Callable[[], float] = time.time) -> None:
        """Not for direct use (it neither creates nor checks anything): call :meth:`open`."""
        self._db_path = db_path
        self._clock = clock
        # One worker thread at a time touches the database from this process. Each
        # operation opens its own connection and closes it before its thread returns: a
        # connection is never shared between threads, no transaction can outlive a failed
        # operation, and a dropped Catalog leaks nothing. Opening a connection costs tens
        # of microseconds, next to the fsync every write pays anyway.
        self._limiter = trio.CapacityLimiter(1)

    @property
    def db_path(self) -> Path:
        """The database file."""
        return self._db_path

    @classmethod
    async def open(cls, data_dir: Path, *, clock: Callable[[], float] = time.time) -> Catalog:
        """Open the catalog in ``data_dir``, creating the directory (mode 0o700), the
        database and its schema when missing, and migrating an older schema; idempotent.

        ``clock`` gives the time in seconds since the epoch for ``registered_at`` and
        ``verified_at``. Raises :class:`CatalogError` when the directory cannot be created
        or the database cannot be opened, is corrupt, or is newer than this module.
        """
        data_dir = Path(data_dir)
        catalog = cls(data_dir / DB_NAME, clock=clock)
        await trio.to_thread.run_sync(make_data_dir, data_dir, limiter=catalog._limiter)
        await catalog._run(functools.partial(initialise, catalog._db_path))
        return catalog

    # -- reading ---------------------------------------------------------------------------

    async def find(self, id: str) -> CatalogModel | None:
        """The model called ``id``, or None when there is none."""
        return await self._run(lambda conn: select(conn, id))

    async def get(self, id: str) -> CatalogModel:
        """The model called ``id``; raises Refusal(NOT_FOUND) when there is none."""
        model = await self.find(id)
        if model is None:
            raise _not_found(id)
        return model

    async def list(self) -> list[CatalogModel]:
        """Every model, in order of registration time, then id."""

        def select_all(conn: sqlite3.Connection) -> list[CatalogModel]:
            rows = conn.execute(f"SELECT {COLUMNS} FROM models ORDER BY registered_at, id")
            return [row_model(row) for row in rows]

        return await self._run(select_all)

    # -- writing ---------------------------------------------------------------------------

    async def register(
        self, id: str, path: str, sha256: str | None = None
    ) -> tuple[CatalogModel, bool]:
        """Add a model, active and unverified; returns it and whether it was created.

        Registering an id again with the same path and sha256 returns the existing model
        and False. Raises Refusal(INVALID_PARAMS) with one problem per bad argument
        (``id``, ``path``: an absolute path to a readable regular file starting with
        ``GGUF``, ``sha256``: 64 hex characters, optionally prefixed ``sha256:``), and
        Refusal(CONFLICT) when the id is registered with another path or sha256.
        """
        return await self._register(id, path, sha256, existing_ok=False)

    async def ensure(self, id: str, path: str, sha256: str | None) -> CatalogModel:
        """The model called ``id``, registered first if the id is unknown.

        Used at start-up for the configured model: a known id is returned unchanged,
        whatever its path and sha256 (and without looking at the file). An unknown id is
        registered as by :meth:`register`, with the same errors.
        """
        model = await self.find(id)
        if model is None:
            model, _ = await self._register(id, path, sha256, existing_ok=True)
        return model

    async def verify(self, id: str) -> CatalogModel:
        """Hash the model's file and record the digest, size, time and trust state.

        The trust state becomes VERIFIED when the digest matches the registered sha256,
        MISMATCH when it does not, and stays UNVERIFIED when no sha256 was registered.
        Raises Refusal(NOT_FOUND) for an unknown id and Refusal(CONFLICT), leaving the
        model unchanged, when its file is missing or cannot be read.
        """
        model = await self.get(id)
        path = Path(model.path)
        try:
            before = await trio.to_thread.run_sync(os.stat, path)
            digest = await model_digest(path)
            after = await trio.to_thread.run_sync(os.stat, path)
        except FileNotFoundError:
            raise Refusal(ErrorCode.CONFLICT, f"model file {model.path} is missing") from None
        except OSError as exc:
            raise Refusal(
                ErrorCode.CONFLICT, f"model file {model.path} cannot be read: {exc.strerror}"
            ) from None
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
            raise Refusal(
                ErrorCode.CONFLICT,
                f"model file {model.path} changed while it was being verified",
                retriable=True,
            )
        verified_at = _rfc3339(self._clock())

        def record(conn: sqlite3.Connection) -> CatalogModel:
            current = select(conn, id)
            if current is None:  # pragma: no cover - nothing deletes models yet
                raise _not_found(id)
            if current.sha256 is None:
                trust = TrustState.UNVERIFIED
            elif digest == "sha256:" + current.sha256:
                trust = TrustState.VERIFIED
            else:
                trust = TrustState.MISMATCH
            conn.execute(
                "UPDATE models SET digest = ?, size_bytes = ?, verified_at = ?, trust_state = ?"
                " WHERE id = ?",
                (digest, after.st_size, verified_at, str(trust), id),
            )
            return attrs.evolve(
                current,
                digest=digest,
                size_bytes=after.st_size,
                verified_at=verified_at,
                trust_state=trust,
            )

        return await self._run(lambda conn: write(conn, record))

    async def set_state(self, id: str, state: ModelState) -> CatalogModel:
        """Make the model active or retired; returns it. Raises Refusal(NOT_FOUND) for an
        unknown id and Refusal(INVALID_PARAMS) for a state that is not a ModelState value.
        """
        try:
            new_state = ModelState(state)
        except ValueError:
            allowed = ", ".join(s.value for s in ModelState)
            raise Refusal(
                ErrorCode.INVALID_PARAMS,
                "invalid model state",
                problems=(f"state: must be one of {allowed} (got {show(state)})",),
            ) from None

        def change(conn: sqlite3.Connection) -> CatalogModel:
            cursor = conn.execute("UPDATE models SET state = ? WHERE id = ?", (str(new_state), id))
            if cursor.rowcount == 0:
                raise _not_found(id)
            model = select(conn, id)
            assert model is not None
            return model

        return await self._run(lambda conn: write(conn, change))

    # -- internals -------------------------------------------------------------------------

    async def _register(
        self, id: str, path: str, sha256: str | None, *, existing_ok: bool
    ) -> tuple[CatalogModel, bool]:
        """Validate and insert; an existing id is returned when its path and sha256 match,
        or whatever they are when ``existing_ok``, and is a conflict otherwise."""
        bad_id = id_problem(id)
        size_bytes, bad_path = await trio.to_thread.run_sync(path_problem, path)
        expected, bad_sha256 = normal_sha256(sha256)
        problems = [p for p in (bad_id, bad_path, bad_sha256) if p is not None]
        if problems:
            raise Refusal(
                ErrorCode.INVALID_PARAMS, "invalid model registration", problems=tuple(problems)
            )
        new = CatalogModel(
            id=id,
            path=path,
            sha256=expected,
            digest=None,
            trust_state=TrustState.UNVERIFIED,
            state=ModelState.ACTIVE,
            size_bytes=size_bytes,
            registered_at=_rfc3339(self._clock()),
            verified_at=None,
        )

        def insert(conn: sqlite3.Connection) -> tuple[CatalogModel, bool]:
            existing = select(conn, id)
            if existing is not None:
                if existing_ok or (existing.path, existing.sha256) == (path, expected):
                    return existing, False
                raise Refusal(
                    ErrorCode.CONFLICT,
                    f"model {id!r} is already registered with another path or sha256",
                )
            conn.execute(
                f"INSERT INTO models ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.id,
                    new.path,
                    new.sha256,
                    new.digest,
                    str(new.trust_state),
                    str(new.state),
                    new.size_bytes,
                    new.registered_at,
                    new.verified_at,
                ),
            )
            return new, True

        return await self._run(lambda conn: write(conn, insert))

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation`` on a fresh connection in a worker thread, under the limiter."""
        return await trio.to_thread.run_sync(
            connected, self._db_path, operation, limiter=self._limiter
        )
