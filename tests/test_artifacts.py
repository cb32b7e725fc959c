"""The artifact store: ids are hashes, puts are idempotent, lineage stays consistent,
limits hold, deletes refuse or cascade, and what is on disk is reconciled at start."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import hypothesis.strategies as st
import pytest
import trio
from hypothesis import HealthCheck, given, settings

from orchestra.artifacts import ArtifactStore, Filters, Limits, artifact_id, blobs
from orchestra.artifacts.model import TEXT_MEDIA_TYPE, kind_problem, tag_problem
from orchestra.errors import ErrorCode, Refusal

BIG = Limits(max_artifact_bytes=1 << 20, max_total_bytes=1 << 24)


async def open_store(root: Path, limits: Limits = BIG) -> ArtifactStore:
    return await ArtifactStore.open(root, limits)


async def put(
    store: ArtifactStore,
    text: str,
    kind: str = "text",
    tags: list[str] | None = None,
    parents: list[str] | None = None,
    session_id: str | None = None,
    task_id: str | None = None,
) -> tuple[str, bool]:
    artifact, created = await store.put(
        text.encode(),
        kind=kind,
        media_type=TEXT_MEDIA_TYPE,
        tags=tags or (),
        parents=parents or (),
        session_id=session_id,
        task_id=task_id,
    )
    return artifact.id, created


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- properties ------------------------------------------------------------------------


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(contents=st.lists(st.binary(max_size=256), min_size=1, max_size=8))
def test_the_id_is_the_hash_and_a_second_put_changes_nothing_but_links(
    tmp_path_factory: pytest.TempPathFactory, contents: list[bytes]
) -> None:
    root = tmp_path_factory.mktemp("store")

    async def main() -> None:
        store = await open_store(root)
        first = {}
        for i, content in enumerate(contents):
            artifact, created = await store.put(
                content, kind="x-blob", media_type="application/octet-stream", tags=[f"t{i}"]
            )
            assert artifact.id == "sha256:" + hashlib.sha256(content).hexdigest()
            assert artifact.size_bytes == len(content)
            assert created == (artifact.id not in first)
            first.setdefault(artifact.id, (artifact.created_at, content))
        for id, (created_at, content) in first.items():
            again, created = await store.put(
                content, kind="plan", media_type="text/plain", tags=["again"]
            )
            assert not created and again.id == id
            assert again.kind == "x-blob" and again.created_at == created_at  # the first stays
            assert "again" in again.tags
            assert (await store.read(id))[1] == content
        usage = await store.usage()
        assert usage.artifacts == len(first)
        assert usage.used_bytes == sum(len(c) for _, c in first.values())

    trio.run(main)


@st.composite
def graphs(draw: st.DrawFn) -> list[tuple[int, list[int]]]:
    """Nodes in creation order, each with parents among the nodes made before it."""
    count = draw(st.integers(1, 12))
    nodes = []
    for i in range(count):
        parents = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        nodes.append((i, parents))
    return nodes


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    graph=graphs(), extra=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), max_size=6)
)
def test_lineage_is_consistent_and_never_cyclic(
    tmp_path_factory: pytest.TempPathFactory,
    graph: list[tuple[int, list[int]]],
    extra: list[tuple[int, int]],
) -> None:
    """Ancestors and descendants mirror each other, match the parent links, and a merge
    that would close a loop is refused."""
    root = tmp_path_factory.mktemp("store")

    async def main() -> None:
        store = await open_store(root)
        ids: list[str] = []
        for i, parents in graph:
            id, _ = await put(store, f"node {i}", parents=[ids[p] for p in parents])
            ids.append(id)
        for child, parent in extra:  # merges of parent links into existing artifacts
            if child >= len(ids) or parent >= len(ids) or child == parent:
                continue
            before = await store.lineage(ids[child])
            try:
                await put(store, f"node {child}", parents=[ids[parent]])
            except Refusal as exc:
                assert exc.code is ErrorCode.CONFLICT
                assert ids[parent] in {n.id for n in before.descendants}
        parents_of = {id: set((await store.get(id)).parents) for id in ids}

        def reach(start: str, step: dict[str, set[str]]) -> set[str]:
            seen, todo = set(), [start]
            while todo:
                for nxt in step[todo.pop()]:
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            return seen

        children_of: dict[str, set[str]] = {id: set() for id in ids}
        for child, parents in parents_of.items():
            for parent in parents:
                children_of[parent].add(child)
        for id in ids:
            lineage = await store.lineage(id)
            ancestors = {n.id for n in lineage.ancestors}
            descendants = {n.id for n in lineage.descendants}
            assert ancestors == reach(id, parents_of)
            assert descendants == reach(id, children_of)
            assert id not in ancestors | descendants  # no cycle through it
            assert not ancestors & descendants
            for node in lineage.ancestors:
                assert id in {n.id for n in (await store.lineage(node.id)).descendants}
            depths = [n.depth for n in lineage.ancestors]
            assert depths == sorted(depths)  # nearest first

    trio.run(main)


@given(st.text(max_size=80))
def test_kinds_and_tags_are_checked_as_documented(value: str) -> None:
    named = value in ("plan", "summary", "diff", "trace", "text")
    custom = value.startswith("x-") and len(value) > 2
    if kind_problem(value) is None:
        assert named or custom
    elif named:
        pytest.fail(f"{value!r} is a named kind")
    if tag_problem(value) is None:
        assert value and len(value) <= 128 and value[0].isalnum()


# -- puts, limits ----------------------------------------------------------------------


async def test_same_content_at_once_is_one_artifact_with_every_tag(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    results: list[tuple[str, bool]] = []

    async def one(i: int) -> None:
        results.append(await put(store, "the same plan", kind="plan", tags=[f"from-{i}"]))

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(one, i)
    assert len({id for id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    artifact = await store.get(results[0][0])
    assert artifact.tags == tuple(sorted(f"from-{i}" for i in range(10)))
    assert len([p for p in files_under(tmp_path / "artifacts" / "objects")]) == 1
    assert not list((tmp_path / "artifacts" / "tmp").iterdir())


async def test_too_large_and_full_are_refused_with_the_figures(tmp_path: Path) -> None:
    store = await open_store(tmp_path, Limits(max_artifact_bytes=10, max_total_bytes=25))
    with pytest.raises(Refusal) as too_large:
        await put(store, "x" * 11)
    assert too_large.value.code is ErrorCode.ARTIFACT_TOO_LARGE
    assert too_large.value.details == {"size_bytes": 11, "max_artifact_bytes": 10}
    await put(store, "a" * 10)
    await put(store, "b" * 10)
    await put(store, "a" * 10)  # the same content again costs nothing
    with pytest.raises(Refusal) as full:
        await put(store, "c" * 10)
    assert full.value.code is ErrorCode.STORAGE_FULL
    assert full.value.details == {"size_bytes": 10, "used_bytes": 20, "max_total_bytes": 25}
    assert (await store.usage()).used_bytes == 20
    assert len(files_under(tmp_path / "artifacts" / "objects")) == 2  # nothing written


async def test_an_unknown_parent_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    ghost = artifact_id(b"never put")
    with pytest.raises(Refusal) as refused:
        await put(store, "child", parents=[ghost])
    assert refused.value.code is ErrorCode.INVALID_PARAMS
    assert refused.value.param == "parents" and ghost in refused.value.message
    assert (await store.usage()).artifacts == 0
    assert files_under(tmp_path / "artifacts" / "objects") == []


async def test_listing_filters_and_pages_newest_first(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    root, _ = await put(store, "root", kind="plan", session_id="s1")
    made = [root]
    for i in range(7):
        id, _ = await put(
            store, f"step {i}", kind="diff" if i % 2 else "summary", tags=[f"n{i % 3}"],
            parents=[root], session_id="s1" if i < 4 else "s2", task_id=f"t{i}",
        )  # fmt: skip
        made.append(id)
    seen, cursor = [], None
    while True:
        page = await store.list(Filters(), limit=3, cursor=cursor)
        seen += [a.id for a in page.artifacts]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == made[::-1]
    diffs = await store.list(Filters(kind="diff"))
    assert [a.id for a in diffs.artifacts] == [made[i + 1] for i in (5, 3, 1)]
    assert {a.id for a in (await store.list(Filters(tag="n0"))).artifacts} == {
        made[1],
        made[4],
        made[7],
    }
    assert len((await store.list(Filters(session_id="s2"))).artifacts) == 3
    assert [a.id for a in (await store.list(Filters(task_id="t2"))).artifacts] == [made[3]]
    assert len((await store.list(Filters(parent=root))).artifacts) == 7
    with pytest.raises(Refusal):
        await store.list(Filters(), cursor="not-a-cursor")


async def test_tags_are_added_and_removed(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    id, _ = await put(store, "tagged", tags=["a", "b"])
    assert (await store.retag(id, add=["c"], remove=["a", "zz"])).tags == ("b", "c")
    with pytest.raises(Refusal) as missing:
        await store.retag(artifact_id(b"nope"), add=["x"])
    assert missing.value.code is ErrorCode.NOT_FOUND


async def test_delete_refuses_while_named_as_a_parent_unless_cascade(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    root, _ = await put(store, "root")
    child, _ = await put(store, "child", parents=[root])
    grandchild, _ = await put(store, "grandchild", parents=[child])
    other, _ = await put(store, "other")
    with pytest.raises(Refusal) as refused:
        await store.delete(root)
    assert refused.value.code is ErrorCode.CONFLICT
    assert refused.value.details == {"children": [child]}
    assert await store.delete(grandchild) == (grandchild,)
    grandchild, _ = await put(store, "grandchild", parents=[child])
    deleted = await store.delete(root, cascade=True)
    assert set(deleted) == {root, child, grandchild} and deleted[0] == root
    assert [a.id for a in (await store.list(Filters())).artifacts] == [other]
    assert len(files_under(tmp_path / "artifacts" / "objects")) == 1
    assert (await store.usage()).used_bytes == len(b"other")
    with pytest.raises(Refusal) as gone:
        await store.get(root)
    assert gone.value.code is ErrorCode.NOT_FOUND


# -- on disk ---------------------------------------------------------------------------


def _plant_leftovers(root: Path, kept: str) -> tuple[str, Path]:
    """What crashes leave: an unfinished write in tmp/, a content file no row names, and
    a row whose file went missing."""
    (root / "artifacts" / "tmp" / "deadbeef.0123").write_bytes(b"half a wri")
    orphan = artifact_id(b"orphan")
    blobs.write(root / "artifacts", orphan, b"orphan")
    path = blobs.object_path(root / "artifacts", kept)
    path.unlink()
    return orphan, path


async def test_start_removes_what_a_crash_left_and_drops_rows_without_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_store(tmp_path)
    kept, _ = await put(store, "survives")
    lost, _ = await put(store, "its file will be gone")
    orphan, _ = _plant_leftovers(tmp_path, lost)
    reopened = await open_store(tmp_path)
    assert [a.id for a in (await reopened.list(Filters())).artifacts] == [kept]
    assert (await reopened.read(kept))[1] == b"survives"
    assert not list((tmp_path / "artifacts" / "tmp").iterdir())
    assert not blobs.object_path(tmp_path / "artifacts", orphan).exists()
    assert any(lost in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


async def test_damaged_content_is_not_served(tmp_path: Path) -> None:
    from orchestra.errors import CatalogError

    store = await open_store(tmp_path)
    id, _ = await put(store, "original")
    blobs.object_path(tmp_path / "artifacts", id).write_bytes(b"tampered")
    with pytest.raises(CatalogError, match="damaged"):
        await store.read(id)


def test_the_index_is_in_wal_mode_with_its_schema(tmp_path: Path) -> None:
    trio.run(open_store, tmp_path)
    conn = sqlite3.connect(tmp_path / "artifacts" / "index.sqlite3")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        conn.close()
    assert os.stat(tmp_path / "artifacts").st_mode & 0o777 == 0o700
