"""Tests for orchestra.catalog: the SQLite registry of GGUF model files."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from orchestra.catalog import (
    DB_NAME,
    SCHEMA_VERSION,
    Catalog,
    CatalogError,
    CatalogModel,
    ModelState,
    TrustState,
)
from orchestra.errors import ErrorCode, Refusal

REPO = Path(__file__).resolve().parent.parent
T0 = 1_795_420_800.0  # 2026-11-23T08:00:00Z


class FakeClock:
    """A clock for registered_at/verified_at that advances one second per reading."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1
        return self.now


def make_gguf(path: Path, body: bytes = b"weights") -> str:
    """Write a tiny fake GGUF file; returns its sha256 hex."""
    content = b"GGUF" + body
    path.write_bytes(content)
    return hashlib.sha256(content).hexdigest()


def db_check(db: Path, sql: str) -> list[tuple[object, ...]]:
    """Run one query on the database directly (blocking; only from sync code or threads)."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def integrity(db: Path) -> str:
    (row,) = db_check(db, "PRAGMA integrity_check")
    return str(row[0])


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def model_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "tiny.gguf"
    return path, make_gguf(path)


async def invalid(catalog: Catalog, id: object, path: object, sha256: object = None) -> list[str]:
    with pytest.raises(Refusal) as info:
        await catalog.register(id, path, sha256)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.INVALID_PARAMS
    assert info.value.problems
    return list(info.value.problems)


# -- open ----------------------------------------------------------------------------------


async def test_open_creates_private_dir_wal_database_and_schema(data_dir: Path) -> None:
    catalog = await Catalog.open(data_dir)
    assert catalog.db_path == data_dir / DB_NAME
    assert stat.S_IMODE((await trio.Path(data_dir).stat()).st_mode) == 0o700
    assert db_check(catalog.db_path, "PRAGMA journal_mode") == [("wal",)]
    assert db_check(catalog.db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert await catalog.list() == []
    # idempotent: opening again changes nothing and loses nothing
    again = await Catalog.open(data_dir)
    assert await again.list() == []
    assert db_check(catalog.db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_open_refuses_a_corrupt_database_naming_it(data_dir: Path) -> None:
    await trio.Path(data_dir).mkdir()
    await trio.Path(data_dir / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(CatalogError, match=str(data_dir / DB_NAME)) as info:
        await Catalog.open(data_dir)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


async def test_open_refuses_a_newer_schema(data_dir: Path) -> None:
    catalog = await Catalog.open(data_dir)
    db_check(catalog.db_path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(CatalogError, match="newer"):
        await Catalog.open(data_dir)
    assert db_check(catalog.db_path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]


async def test_open_fails_when_the_directory_cannot_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(CatalogError, match="cannot create the catalog directory"):
        await Catalog.open(blocker / "data")


# -- register, get, list -------------------------------------------------------------------


async def test_register_get_list(data_dir: Path, tmp_path: Path) -> None:
    catalog = await Catalog.open(data_dir, clock=FakeClock())
    b_sha = make_gguf(tmp_path / "b.gguf", b"bbb")
    make_gguf(tmp_path / "a.gguf", b"a")

    b, created = await catalog.register("b-model", str(tmp_path / "b.gguf"), b_sha)
    assert created
    assert b == CatalogModel(
        id="b-model",
        path=str(tmp_path / "b.gguf"),
        sha256=b_sha,
        digest=None,
        trust_state=TrustState.UNVERIFIED,
        state=ModelState.ACTIVE,
        size_bytes=7,
        registered_at="2026-11-23T08:00:01Z",
        verified_at=None,
    )
    a, created = await catalog.register("a.model_1", str(tmp_path / "a.gguf"))
    assert created and a.sha256 is None and a.registered_at == "2026-11-23T08:00:02Z"

    assert await catalog.get("b-model") == b
    assert await catalog.find("a.model_1") == a
    assert await catalog.find("nope") is None
    # registration order, not id order
    assert await catalog.list() == [b, a]


async def test_list_orders_by_registered_at_then_id(data_dir: Path, tmp_path: Path) -> None:
    catalog = await Catalog.open(data_dir, clock=lambda: T0)
    make_gguf(tmp_path / "m.gguf")
    for id in ["zeta", "alpha", "Mid", "beta"]:
        await catalog.register(id, str(tmp_path / "m.gguf"))
    assert [m.id for m in await catalog.list()] == ["Mid", "alpha", "beta", "zeta"]


async def test_register_normalises_sha256(data_dir: Path, model_file: tuple[Path, str]) -> None:
    path, sha = model_file
    catalog = await Catalog.open(data_dir)
    upper, _ = await catalog.register("upper", str(path), sha.upper())
    prefixed, _ = await catalog.register("prefixed", str(path), "sha256:" + sha)
    assert upper.sha256 == prefixed.sha256 == sha
    # the normalised forms are the same registration
    again, created = await catalog.register("upper", str(path), "SHA256:" + sha.upper())
    assert (again, created) == (upper, False)


async def test_register_is_idempotent(data_dir: Path, model_file: tuple[Path, str]) -> None:
    path, sha = model_file
    catalog = await Catalog.open(data_dir, clock=FakeClock())
    first, created = await catalog.register("m", str(path), sha)
    assert created
    second, created = await catalog.register("m", str(path), sha)
    assert not created
    assert second == first  # registered_at not bumped either
    assert await catalog.list() == [first]


async def test_register_conflict(
    data_dir: Path, tmp_path: Path, model_file: tuple[Path, str]
) -> None:
    path, sha = model_file
    other = tmp_path / "other.gguf"
    other_sha = make_gguf(other, b"other")
    catalog = await Catalog.open(data_dir)
    original, _ = await catalog.register("m", str(path), sha)
    for other_path, other_hash in [(other, sha), (path, other_sha), (path, None)]:
        with pytest.raises(Refusal) as info:
            await catalog.register("m", str(other_path), other_hash)
        assert info.value.code is ErrorCode.CONFLICT
        assert "'m'" in info.value.message
    assert await catalog.list() == [original]


async def test_register_rejects_bad_arguments_naming_each_field(
    data_dir: Path, tmp_path: Path, model_file: tuple[Path, str]
) -> None:
    path, sha = model_file
    good = str(path)
    catalog = await Catalog.open(data_dir)
    not_gguf = tmp_path / "model.bin"
    not_gguf.write_bytes(b"GGML and more")
    short = tmp_path / "short.gguf"
    short.write_bytes(b"GG")

    for bad_id in ["", "-leading", ".hidden", "has space", "slash/y", "x" * 129, "é", 7]:
        (problem,) = await invalid(catalog, bad_id, good)
        assert problem.startswith("id: "), problem
    assert (await catalog.register("x" * 128, good))[1]  # the longest id is fine

    bad_paths: list[tuple[object, str]] = [
        ("tiny.gguf", "must be absolute"),
        (str(tmp_path / "missing.gguf"), "no such file"),
        (str(tmp_path), "regular file"),
        (str(not_gguf), "not a GGUF file"),
        (str(short), "not a GGUF file"),
        (None, "must be a string"),
    ]
    for bad_path, why in bad_paths:
        (problem,) = await invalid(catalog, "ok", bad_path)
        assert problem.startswith("path: ") and why in problem, problem

    for bad_sha in ["abc", sha[:-1], sha + "0", "sha256:" + "g" * 64, "md5:" + sha, 5]:
        (problem,) = await invalid(catalog, "ok", good, bad_sha)
        assert problem.startswith("sha256: "), problem

    # every bad field at once, one line each, in field order
    problems = await invalid(catalog, "", "relative", "nothex")
    assert [p.split(":")[0] for p in problems] == ["id", "path", "sha256"]
    assert [m.id for m in await catalog.list()] == ["x" * 128]


# -- verify --------------------------------------------------------------------------------


async def test_verify_match(data_dir: Path, model_file: tuple[Path, str]) -> None:
    path, sha = model_file
    catalog = await Catalog.open(data_dir, clock=FakeClock())
    registered, _ = await catalog.register("m", str(path), sha)
    verified = await catalog.verify("m")
    assert verified == attrs.evolve(
        registered,
        digest="sha256:" + sha,
        trust_state=TrustState.VERIFIED,
        size_bytes=path.stat().st_size,
        verified_at="2026-11-23T08:00:02Z",
    )
    assert await catalog.get("m") == verified


async def test_verify_mismatch(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    actual = make_gguf(path, b"actual")
    catalog = await Catalog.open(data_dir)
    await catalog.register("m", str(path), "0" * 64)
    model = await catalog.verify("m")
    assert model.trust_state is TrustState.MISMATCH
    assert model.digest == "sha256:" + actual
    assert model.sha256 == "0" * 64
    assert await catalog.get("m") == model


async def test_verify_without_sha256_records_digest_only(
    data_dir: Path, model_file: tuple[Path, str]
) -> None:
    path, sha = model_file
    catalog = await Catalog.open(data_dir)
    await catalog.register("m", str(path))
    model = await catalog.verify("m")
    assert model.trust_state is TrustState.UNVERIFIED
    assert model.digest == "sha256:" + sha
    assert model.verified_at is not None
    assert await catalog.get("m") == model


async def test_verify_notices_a_changed_file(data_dir: Path, model_file: tuple[Path, str]) -> None:
    path, sha = model_file
    catalog = await Catalog.open(data_dir)
    await catalog.register("m", str(path), sha)
    assert (await catalog.verify("m")).trust_state is TrustState.VERIFIED
    # another size, so the digest cache (keyed by path, size and mtime) cannot answer
    changed = make_gguf(path, b"tampered with!")
    model = await catalog.verify("m")
    assert model.trust_state is TrustState.MISMATCH
    assert model.digest == "sha256:" + changed
    assert model.size_bytes == len(b"GGUFtampered with!")
    assert await catalog.get("m") == model


async def test_verify_missing_file_is_a_conflict_and_changes_nothing(
    data_dir: Path, model_file: tuple[Path, str]
) -> None:
    path, sha = model_file
    catalog = await Catalog.open(data_dir)
    await catalog.register("m", str(path), sha)
    before = await catalog.verify("m")
    path.unlink()
    with pytest.raises(Refusal) as info:
        await catalog.verify("m")
    assert info.value.code is ErrorCode.CONFLICT
    assert str(path) in info.value.message and "missing" in info.value.message
    assert await catalog.get("m") == before


# -- set_state, ensure, unknown ids --------------------------------------------------------


async def test_set_state_retire_and_activate(data_dir: Path, model_file: tuple[Path, str]) -> None:
    path, _ = model_file
    catalog = await Catalog.open(data_dir)
    registered, _ = await catalog.register("m", str(path))
    retired = await catalog.set_state("m", ModelState.RETIRED)
    assert retired == attrs.evolve(registered, state=ModelState.RETIRED)
    assert await catalog.get("m") == retired
    active = await catalog.set_state("m", ModelState.ACTIVE)
    assert active == registered
    assert await catalog.get("m") == registered


async def test_set_state_rejects_an_unknown_state(
    data_dir: Path, model_file: tuple[Path, str]
) -> None:
    path, _ = model_file
    catalog = await Catalog.open(data_dir)
    registered, _ = await catalog.register("m", str(path))
    with pytest.raises(Refusal) as info:
        await catalog.set_state("m", "deleted")  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.INVALID_PARAMS
    assert info.value.problems[0].startswith("state: ")
    assert await catalog.get("m") == registered


async def test_unknown_ids_are_not_found(data_dir: Path) -> None:
    catalog = await Catalog.open(data_dir)
    calls: list[Callable[[], Awaitable[CatalogModel]]] = [
        partial(catalog.get, "ghost"),
        partial(catalog.verify, "ghost"),
        partial(catalog.set_state, "ghost", ModelState.RETIRED),
    ]
    for call in calls:
        with pytest.raises(Refusal) as info:
            await call()
        assert info.value.code is ErrorCode.NOT_FOUND
        assert info.value.message == "no model 'ghost' in the catalog"
    assert await catalog.list() == []


async def test_ensure(data_dir: Path, tmp_path: Path, model_file: tuple[Path, str]) -> None:
    path, sha = model_file
    catalog = await Catalog.open(data_dir)
    model = await catalog.ensure("m", str(path), sha)
    assert model == await catalog.get("m")
    assert (model.path, model.sha256, model.state) == (str(path), sha, ModelState.ACTIVE)
    # a known id is returned unchanged, whatever is configured now, file or no file
    assert await catalog.ensure("m", str(tmp_path / "elsewhere.gguf"), None) == model
    path.unlink()
    assert await catalog.ensure("m", str(path), sha) == model
    # an unknown id is validated like register
    with pytest.raises(Refusal) as info:
        await catalog.ensure("n", str(path), sha)
    assert info.value.code is ErrorCode.INVALID_PARAMS
    assert await catalog.list() == [model]


async def test_to_json(data_dir: Path, model_file: tuple[Path, str]) -> None:
    path, sha = model_file
    catalog = await Catalog.open(data_dir, clock=FakeClock())
    await catalog.register("m", str(path), sha)
    model = await catalog.verify("m")
    as_json = model.to_json()
    assert as_json == {
        "id": "m",
        "path": str(path),
        "sha256": sha,
        "digest": "sha256:" + sha,
        "trust_state": "verified",
        "state": "active",
        "size_bytes": path.stat().st_size,
        "registered_at": "2026-11-23T08:00:01Z",
        "verified_at": "2026-11-23T08:00:02Z",
    }
    assert type(as_json["trust_state"]) is str and type(as_json["state"]) is str
    assert json.loads(json.dumps(as_json)) == as_json


# -- persistence, cancellation -------------------------------------------------------------


async def test_everything_survives_reopening(data_dir: Path, tmp_path: Path) -> None:
    catalog = await Catalog.open(data_dir)
    for i in range(5):
        sha = make_gguf(tmp_path / f"{i}.gguf", bytes([i]) * i)
        await catalog.register(f"m{i}", str(tmp_path / f"{i}.gguf"), sha if i % 2 else None)
    await catalog.verify("m1")
    await catalog.verify("m2")
    await catalog.set_state("m3", ModelState.RETIRED)
    before = await catalog.list()
    del catalog

    reopened = await Catalog.open(data_dir)
    assert await reopened.list() == before
    assert [(m.id, m.trust_state, m.state) for m in before] == [
        ("m0", TrustState.UNVERIFIED, ModelState.ACTIVE),
        ("m1", TrustState.VERIFIED, ModelState.ACTIVE),
        ("m2", TrustState.UNVERIFIED, ModelState.ACTIVE),
        ("m3", TrustState.UNVERIFIED, ModelState.RETIRED),
        ("m4", TrustState.UNVERIFIED, ModelState.ACTIVE),
    ]


async def test_a_call_cancelled_before_it_starts_changes_nothing(
    data_dir: Path, model_file: tuple[Path, str]
) -> None:
    path, _ = model_file
    catalog = await Catalog.open(data_dir)
    with trio.CancelScope() as scope:
        scope.cancel()
        await catalog.register("m", str(path))
    assert scope.cancelled_caught
    assert await catalog.find("m") is None
    # and the catalog is still usable
    assert (await catalog.register("m", str(path)))[1]


async def test_a_write_whose_thread_started_commits_despite_cancellation(
    data_dir: Path, model_file: tuple[Path, str]
) -> None:
    path, _ = model_file
    catalog = await Catalog.open(data_dir)
    await catalog.register("m", str(path))
    scope = trio.CancelScope()
    returned: list[CatalogModel] = []

    async def retire() -> None:
        with scope:
            returned.append(await catalog.set_state("m", ModelState.RETIRED))
            await trio.lowlevel.checkpoint()  # where the cancellation is delivered

    # another connection holds the write lock, so set_state's thread waits inside SQLite
    blocker = sqlite3.connect(catalog.db_path, isolation_level=None, check_same_thread=False)
    try:
        await trio.to_thread.run_sync(blocker.execute, "BEGIN IMMEDIATE")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(retire)
            await trio.testing.wait_all_tasks_blocked()  # retire() waits on its thread
            scope.cancel()
            await trio.to_thread.run_sync(blocker.execute, "COMMIT")
    finally:
        blocker.close()
    assert scope.cancelled_caught
    assert [m.state for m in returned] == [ModelState.RETIRED]
    assert (await catalog.get("m")).state is ModelState.RETIRED


# -- concurrency ---------------------------------------------------------------------------


async def test_concurrent_tasks(data_dir: Path, tmp_path: Path) -> None:
    catalog = await Catalog.open(data_dir)
    shas = {i: make_gguf(tmp_path / f"{i}.gguf", str(i).encode()) for i in range(50)}

    async def one(i: int) -> None:
        # every model registered twice at once: exactly one creation wins
        async with trio.open_nursery() as both:
            for _ in range(2):
                both.start_soon(catalog.register, f"m{i}", str(tmp_path / f"{i}.gguf"), shas[i])
        if i % 2:
            await catalog.set_state(f"m{i}", ModelState.RETIRED)
        if i % 3:
            await catalog.verify(f"m{i}")

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)

    models = {m.id: m for m in await catalog.list()}
    assert sorted(models) == sorted(f"m{i}" for i in range(50))
    for i in range(50):
        model = models[f"m{i}"]
        assert model.path == str(tmp_path / f"{i}.gguf") and model.sha256 == shas[i]
        assert model.state is (ModelState.RETIRED if i % 2 else ModelState.ACTIVE)
        if i % 3:
            assert model.trust_state is TrustState.VERIFIED
            assert model.digest == "sha256:" + shas[i]
        else:
            assert model.trust_state is TrustState.UNVERIFIED and model.digest is None
    assert await trio.to_thread.run_sync(integrity, catalog.db_path) == "ok"


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import trio

    from orchestra.catalog import Catalog

    async def main(data_dir, prefix, model):
        catalog = await Catalog.open(Path(data_dir))
        print("ready", flush=True)
        assert sys.stdin.readline() == "go\\n"
        for i in range(30):
            _, created = await catalog.register(f"{prefix}{i}", model)
            assert created
        print("done", flush=True)

    trio.run(main, *sys.argv[1:])
    """
)


def test_two_processes_write_at_once(data_dir: Path, model_file: tuple[Path, str]) -> None:
    path, _ = model_file
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(data_dir), prefix, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            text=True,
        )
        for prefix in ["a", "b"]
    ]
    try:
        # both have opened (and raced to create) the database: now let them write at once
        for writer in writers:
            assert writer.stdout is not None and writer.stdin is not None
            assert writer.stdout.readline() == "ready\n"
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        outputs = [writer.communicate(timeout=60) for writer in writers]
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.communicate()
    for writer, (out, err) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, err
        assert out == "done\n"

    ids = [str(row[0]) for row in db_check(data_dir / DB_NAME, "SELECT id FROM models")]
    assert sorted(ids) == sorted([f"a{i}" for i in range(30)] + [f"b{i}" for i in range(30)])
    assert integrity(data_dir / DB_NAME) == "ok"


CRASHER = textwrap.dedent(
    """
    import sqlite3
    import sys

    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("PRAGMA cache_size = 4")  # spill uncommitted pages into the WAL file
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE models SET state = 'retired', digest = 'sha256:bogus'")
    conn.execute("DELETE FROM models WHERE id = 'm0'")
    for i in range(2000):
        conn.execute(
            "INSERT INTO models (id, path, trust_state, state, registered_at)"
            " VALUES (?, ?, 'unverified', 'active', '2026-01-01T00:00:00Z')",
            (f"junk{i}", "/" + "x" * 1000),
        )
    print("in transaction", flush=True)
    sys.stdin.read()  # wait here, mid-transaction, for SIGKILL
    """
)


async def test_a_writer_killed_mid_transaction_leaves_the_old_state(
    data_dir: Path, tmp_path: Path
) -> None:
    catalog = await Catalog.open(data_dir)
    for i in range(3):
        sha = make_gguf(tmp_path / f"{i}.gguf", bytes([i]))
        await catalog.register(f"m{i}", str(tmp_path / f"{i}.gguf"), sha)
    await catalog.verify("m1")
    before = await catalog.list()
    wal = catalog.db_path.with_name(DB_NAME + "-wal")
    wal_size_before = wal.stat().st_size if wal.exists() else 0

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            crasher: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    [sys.executable, "-c", CRASHER, str(catalog.db_path)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    check=False,
                )
            )
            assert crasher.stdout is not None
            marker = b""
            while not marker.endswith(b"\n"):
                chunk = await crasher.stdout.receive_some()
                assert chunk, "the crasher exited before its marker"
                marker += chunk
            assert marker == b"in transaction\n"
            # the uncommitted transaction really reached the disk
            assert wal.stat().st_size > wal_size_before
            crasher.send_signal(signal.SIGKILL)
            assert await crasher.wait() == -signal.SIGKILL

    reopened = await Catalog.open(data_dir)
    assert await reopened.list() == before
    assert await trio.to_thread.run_sync(integrity, reopened.db_path) == "ok"
    # the killed writer's lock is gone: writes go through again
    assert (await reopened.set_state("m0", ModelState.RETIRED)).state is ModelState.RETIRED
