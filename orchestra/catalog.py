"""The model catalog: a local registry of GGUF model files.

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
  each connection waits for up to :data:`BUSY_TIMEOUT_S` (``busy_timeout``) before giving
  up with :class:`CatalogError`. ``BEGIN IMMEDIATE`` takes the write lock before the first
  read, so a read-check-write (as in :meth:`Catalog.register`) never acts on a stale read.
  Readers are never blocked by a writer (WAL).
- **Off the event loop.** All SQLite and file work runs in a worker thread via
  :func:`trio.to_thread.run_sync`.
- **Migratable.** ``PRAGMA user_version`` is the schema version; :data:`_MIGRATIONS` holds
  the steps from each version to the next, applied in one transaction by
  :meth:`Catalog.open`. A database from a newer orchestra is refused, not touched.

Errors: bad arguments and unknown ids are :class:`~orchestra.errors.Refusal`
(``INVALID_PARAMS``, ``NOT_FOUND``, ``CONFLICT``), answered to the HTTP client as they are;
a database that cannot be read or written is :class:`CatalogError`.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import re
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import trio

from orchestra.engine.identity import model_digest
from orchestra.errors import CatalogError, ErrorCode, Refusal

__all__ = [
    "BUSY_TIMEOUT_S",
    "DB_NAME",
    "SCHEMA_VERSION",
    "Catalog",
    "CatalogError",
    "CatalogModel",
    "ModelState",
    "TrustState",
]

T = TypeVar("T")

DB_NAME: Final = "catalog.sqlite3"
"""The database's file name inside the data directory."""

BUSY_TIMEOUT_S: Final = 30.0
"""How long a connection waits for another connection's lock before failing."""

ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""What a model id looks like (matched in full)."""

_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
_GGUF_MAGIC: Final = b"GGUF"

_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
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
"""``_MIGRATIONS[v]`` is the list of statements taking the schema from version v to v + 1."""

SCHEMA_VERSION: Final = len(_MIGRATIONS)
"""The schema version this module writes (``PRAGMA user_version``)."""

_COLUMNS: Final = (
    "id, path, sha256, digest, trust_state, state, size_bytes, registered_at, verified_at"
)


class TrustState(enum.StrEnum):
    """Whether a model file is known to be the file its registration promised."""

    VERIFIED = "verified"
    """The last computed digest equals the expected sha256."""
    MISMATCH = "mismatch"
    """The last computed digest differs from the expected sha256."""
    UNVERIFIED = "unverified"
    """Never verified, or no sha256 was given to compare the digest with."""


class ModelState(enum.StrEnum):
    """Whether a model is offered for use."""

    ACTIVE = "active"
    RETIRED = "retired"


@attrs.frozen
class CatalogModel:
    """One model of the catalog, as read from the database."""

    id: str
    """The catalog's key, matching :data:`ID_PATTERN`."""
    path: str
    """The absolute path of the GGUF file, exactly as registered."""
    sha256: str | None
    """The expected sha256 given at registration (64 lowercase hex characters), if any."""
    digest: str | None
    """``sha256:<hex>`` of the file as last computed by :meth:`Catalog.verify`, if ever."""
    trust_state: TrustState
    """What the digest says about the file; see :class:`TrustState`."""
    state: ModelState
    """Active on registration; changed only by :meth:`Catalog.set_state`."""
    size_bytes: int | None
    """The file's size at registration or at the last verify."""
    registered_at: str
    """When the model was registered, RFC 3339 UTC (``2026-11-23T10:00:00Z``)."""
    verified_at: str | None
    """When the model was last verified, RFC 3339 UTC, if ever."""

    def to_json(self) -> dict[str, Any]:
        """A plain JSON-able dict with one key per field, enums as their string values."""
        return {
            "id": self.id,
            "path": self.path,
            "sha256": self.sha256,
            "digest": self.digest,
            "trust_state": str(self.trust_state),
            "state": str(self.state),
            "size_bytes": self.size_bytes,
            "registered_at": self.registered_at,
            "verified_at": self.verified_at,
        }


def _model(row: Sequence[Any]) -> CatalogModel:
    """A model from a row selected with :data:`_COLUMNS`."""
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


def _not_found(id: str) -> Refusal:
    return Refusal(ErrorCode.NOT_FOUND, f"no model {id!r} in the catalog")


def _show(value: object) -> str:
    """A short, single-line rendering of an argument for a problem line."""
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 80 else value[:77] + "...")
    return f"a {type(value).__name__}"


# -- argument checks (each returns a problem line naming the field, or None) ---------------


def _id_problem(id: object) -> str | None:
    if not isinstance(id, str):
        return f"id: must be a string (got {_show(id)})"
    if ID_PATTERN.fullmatch(id) is None:
        return (
            "id: must be 1 to 128 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit (got {_show(id)})"
        )
    return None


def _normal_sha256(sha256: object) -> tuple[str | None, str | None]:
    """``(normalised sha256, problem)``: lowercase hex without the ``sha256:`` prefix."""
    if sha256 is None:
        return None, None
    if not isinstance(sha256, str):
        return None, f"sha256: must be a string (got {_show(sha256)})"
    hex_part = sha256[len("sha256:") :] if sha256.lower().startswith("sha256:") else sha256
    if _SHA256_HEX.fullmatch(hex_part) is None:
        return None, (
            'sha256: must be 64 hexadecimal characters, optionally prefixed "sha256:" '
            f"(got {_show(sha256)})"
        )
    return hex_part.lower(), None


def _path_problem(path: object) -> tuple[int | None, str | None]:
    """``(size in bytes, problem)`` for a model path. Blocking: run it in a thread."""
    if not isinstance(path, str):
        return None, f"path: must be a string (got {_show(path)})"
    if not os.path.isabs(path):
        return None, f"path: must be absolute (got {_show(path)})"
    if "\x00" in path or not path.isprintable():
        return None, f"path: must not contain control characters (got {_show(path)})"
    try:
        path.encode(sys.getfilesystemencoding())
    except UnicodeEncodeError:
        return None, f"path: not a valid file name on this system (got {_show(path)})"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None, f"path: no such file (got {_show(path)})"
    except OSError as exc:
        return None, f"path: cannot be examined: {exc.strerror} (got {_show(path)})"
    if not stat.S_ISREG(info.st_mode):
        return None, f"path: must be a regular file (got {_show(path)})"
    try:
        with open(path, "rb") as source:
            magic = source.read(len(_GGUF_MAGIC))
    except OSError as exc:
        return None, f"path: cannot be read: {exc.strerror} (got {_show(path)})"
    if magic != _GGUF_MAGIC:
        return None, f"path: not a GGUF file, it does not start with b'GGUF' (got {_show(path)})"
    return info.st_size, None


def _make_data_dir(data_dir: Path) -> None:
    """Blocking: create the data directory, mode 0o700, unless it exists."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CatalogError(f"cannot create the catalog directory {data_dir}: {exc}") from exc


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# -- the database, all blocking: called only in worker threads -----------------------------


def _write(conn: sqlite3.Connection, change: Callable[[sqlite3.Connection], T]) -> T:
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


def _select(conn: sqlite3.Connection, id: str) -> CatalogModel | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM models WHERE id = ?", (id,)).fetchone()
    return None if row is None else _model(row)


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
        await trio.to_thread.run_sync(_make_data_dir, data_dir, limiter=catalog._limiter)
        await catalog._run(catalog._initialise)
        return catalog

    # -- reading ---------------------------------------------------------------------------

    async def find(self, id: str) -> CatalogModel | None:
        """The model called ``id``, or None when there is none."""
        return await self._run(lambda conn: _select(conn, id))

    async def get(self, id: str) -> CatalogModel:
        """The model called ``id``; raises Refusal(NOT_FOUND) when there is none."""
        model = await self.find(id)
        if model is None:
            raise _not_found(id)
        return model

    async def list(self) -> list[CatalogModel]:
        """Every model, in order of registration time, then id."""

        def select_all(conn: sqlite3.Connection) -> list[CatalogModel]:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM models ORDER BY registered_at, id")
            return [_model(row) for row in rows]

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
            current = _select(conn, id)
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

        return await self._run(lambda conn: _write(conn, record))

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
                problems=(f"state: must be one of {allowed} (got {_show(state)})",),
            ) from None

        def change(conn: sqlite3.Connection) -> CatalogModel:
            cursor = conn.execute("UPDATE models SET state = ? WHERE id = ?", (str(new_state), id))
            if cursor.rowcount == 0:
                raise _not_found(id)
            model = _select(conn, id)
            assert model is not None
            return model

        return await self._run(lambda conn: _write(conn, change))

    # -- internals -------------------------------------------------------------------------

    async def _register(
        self, id: str, path: str, sha256: str | None, *, existing_ok: bool
    ) -> tuple[CatalogModel, bool]:
        """Validate and insert; an existing id is returned when its path and sha256 match,
        or whatever they are when ``existing_ok``, and is a conflict otherwise."""
        id_problem = _id_problem(id)
        size_bytes, path_problem = await trio.to_thread.run_sync(_path_problem, path)
        expected, sha_problem = _normal_sha256(sha256)
        problems = [p for p in (id_problem, path_problem, sha_problem) if p is not None]
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
            existing = _select(conn, id)
            if existing is not None:
                if existing_ok or (existing.path, existing.sha256) == (path, expected):
                    return existing, False
                raise Refusal(
                    ErrorCode.CONFLICT,
                    f"model {id!r} is already registered with another path or sha256",
                )
            conn.execute(
                f"INSERT INTO models ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

        return await self._run(lambda conn: _write(conn, insert))

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation`` on a fresh connection in a worker thread, under the limiter."""
        return await trio.to_thread.run_sync(self._connected, operation, limiter=self._limiter)

    def _connected(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking: open a connection, run ``operation`` on it, close it; sqlite errors
        become CatalogError naming the database."""
        try:
            # isolation_level=None: the sqlite3 module opens no transactions of its own;
            # every write says BEGIN IMMEDIATE itself (see _write).
            conn = sqlite3.connect(self._db_path, isolation_level=None)
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot open the catalog database {self._db_path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA synchronous = FULL")
            return operation(conn)
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog database {self._db_path}: {exc}") from exc
        finally:
            conn.close()

    def _initialise(self, conn: sqlite3.Connection) -> None:
        """Blocking: WAL mode, then the schema migrated to :data:`SCHEMA_VERSION`."""
        # WAL is persistent, a property of the file. Where it is refused (some network file
        # systems) SQLite keeps its rollback journal, which gives the same atomicity; only
        # readers then wait for writers. So the answer is not checked.
        conn.execute("PRAGMA journal_mode = WAL").fetchone()

        def migrate(conn: sqlite3.Connection) -> None:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog database {self._db_path} has schema version {version}, newer "
                    f"than this orchestra's {SCHEMA_VERSION}; refusing to touch it"
                )
            for steps in _MIGRATIONS[version:]:
                for statement in steps:
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

        _write(conn, migrate)
