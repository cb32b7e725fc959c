"""A process killed (``SIGKILL``) in the middle of writing artifacts, then the store
opened again: nothing half-written is visible, nothing acknowledged is lost, and what the
crash left on disk is cleaned up.

The child process puts artifacts one after another and prints ``ACK <n>`` when a put has
returned. It is killed either at a chosen point inside a write (each point parametrized:
deterministic), or after a seeded number of acknowledgements, wherever it happens to be.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from orchestra.artifacts import ArtifactStore, Filters, Limits, artifact_id, blobs

AFTER = b"put after the crash"
LIMITS = Limits(max_artifact_bytes=1 << 22, max_total_bytes=1 << 30)

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import trio
    from pathlib import Path
    from orchestra.artifacts import ArtifactStore, Limits, store as store_module

    root, point, crash_at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    start = int(sys.argv[4])
    count = 0

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def around(name, function):
        def wrapped(*args, **kwargs):
            if point == "before-" + name and count == crash_at:
                die()
            result = function(*args, **kwargs)
            if point == "after-" + name and count == crash_at:
                die()
            return result
        return wrapped

    real_write = os.write
    def half_write(fd, data):
        if point == "mid-file" and count == crash_at:
            real_write(fd, bytes(data[: len(data) // 2]))
            die()
        return real_write(fd, data)

    os.write = half_write
    os.fsync = around("fsync", os.fsync)
    os.replace = around("rename", os.replace)
    store_module.database.insert = around("insert", store_module.database.insert)
    store_module.write = around("commit", store_module.write)
    store_module.blobs.remove = around("unlink", store_module.blobs.remove)

    def content(n):
        return (f"artifact {n} " * (1 + n * 997 % 5000)).encode()

    async def main():
        global count
        store = await ArtifactStore.open(root, Limits(1 << 22, 1 << 30))
        parent = None
        for n in range(start, start + 10_000):
            count = n
            artifact, _ = await store.put(
                content(n), kind="trace", media_type="text/plain",
                parents=[parent] if parent else [], tags=[f"n{n}"],
            )
            print("ACK", n, flush=True)
            if n % 4 == 3:  # now and then, delete one nobody names as a parent
                count = n
                await store.delete(artifact.id)
                print("DEL", n, flush=True)
            else:
                parent = artifact.id

    trio.run(main)
    """
)


def content(n: int) -> bytes:
    return (f"artifact {n} " * (1 + n * 997 % 5000)).encode()


def run_child(
    root: Path, point: str, crash_at: int, kill_after_acks: int | None, start: int = 0
) -> list[str]:
    """Run the child, its puts numbered from ``start``, until it kills itself at ``point``
    (put number ``crash_at``) or, with ``kill_after_acks``, until it has printed that many
    lines; its lines, and ``START <start>`` first."""
    lines: list[str] = [f"START {start}"]
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), point, str(crash_at), str(start)],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line.strip())
            if kill_after_acks is not None and len(lines) > kill_after_acks:
                child.kill()  # SIGKILL, wherever it is
                break
        child.wait(timeout=60)
    assert child.returncode == -9, (child.returncode, lines[-3:])
    return lines


def check_after_restart(root: Path, lines: list[str]) -> None:
    acked = {int(line.split()[1]) for line in lines if line.startswith("ACK")}
    deleted = {int(line.split()[1]) for line in lines if line.startswith("DEL")}
    starts = {int(line.split()[1]) for line in lines if line.startswith("START")}
    tried = acked | {n + 1 for n in acked} | starts  # the put in progress: one past the last
    ids = {artifact_id(content(n)): n for n in tried}

    async def reopen() -> None:
        store = await ArtifactStore.open(root, LIMITS)
        # A crash leaves at most files without rows, never a row without its file.
        assert store.reconciled.rows_without_content == ()
        listed = []
        cursor = None
        while True:
            page = await store.list(Filters(), limit=200, cursor=cursor)
            listed += page.artifacts
            if (cursor := page.next_cursor) is None:
                break
        visible = {a.id for a in listed}
        deleting = {n for n in acked if n % 4 == 3} - deleted  # killed in its delete
        for n in acked - deleted - deleting:  # nothing acknowledged is lost
            assert artifact_id(content(n)) in visible, f"acknowledged artifact {n} is lost"
        for n in deleted:  # nor does an acknowledged delete come back
            assert artifact_id(content(n)) not in visible, f"deleted artifact {n} is back"
        for artifact in listed:  # nothing visible is half-written
            stored, data = await store.read(artifact.id)  # its content matches its id
            if data == AFTER:
                continue  # put by an earlier round's check
            assert artifact.id in ids, "an artifact nobody put"
            assert data == content(ids[artifact.id]) and stored.size_bytes == len(data)
            for parent in artifact.parents:
                assert parent in visible, "a parent link to nothing"
        usage = await store.usage()
        assert usage.used_bytes == sum(a.size_bytes for a in listed)
        on_disk = set(blobs.stored(root / "artifacts"))
        assert on_disk == visible  # no orphan file, no row without its file
        assert not list((root / "artifacts" / "tmp").iterdir())
        # and the store still works
        again, _ = await store.put(AFTER, kind="text", media_type="text/plain")
        assert (await store.read(again.id))[1] == AFTER

    trio.run(reopen)


POINTS = [
    "mid-file",  # the temporary file half-written
    "before-fsync",  # written, not yet flushed
    "before-rename",  # flushed, not yet renamed onto its name
    "after-rename",  # renamed, the directory not yet fsynced
    "after-insert",  # the row inserted, the transaction not committed
    "after-commit",  # committed, not yet acknowledged
    "before-unlink",  # a delete committed, its file still there
]


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_a_point_of_a_write(tmp_path: Path, point: str) -> None:
    crash_at = 7 if point == "before-unlink" else 5  # put 7 is followed by a delete
    lines = run_child(tmp_path, point, crash_at, None)
    assert f"ACK {crash_at - 1}" in lines
    check_after_restart(tmp_path, lines)


def test_killed_anywhere_again_and_again(tmp_path: Path) -> None:
    """Five kills at seeded moments on the same directory, each followed by a restart."""
    rng = random.Random(19)
    lines: list[str] = []
    for run in range(5):
        lines += run_child(tmp_path, "none", -1, rng.randint(1, 40), start=1000 * run)
        check_after_restart(tmp_path, lines)
