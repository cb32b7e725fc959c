"""Keeping a completed task's output as an artifact (a task's ``"artifact"`` field)."""

from __future__ import annotations

import logging

import attrs

from orchestra.artifacts import ArtifactStore
from orchestra.artifacts.model import TEXT_MEDIA_TYPE
from orchestra.errors import CatalogError, Refusal
from orchestra.events import EventKind
from orchestra.messages import Completed
from orchestra.scheduling.record import Task

log = logging.getLogger("orchestra.artifacts")


def output_text(task: Task) -> str:
    """The text the task generated: its ``token`` events' pieces, in order (a chat
    answer's tool calls are not part of it)."""
    return "".join(e.data["t"] for e in task.log.events if e.kind is EventKind.TOKEN)


async def keep_output(store: ArtifactStore | None, task: Task, done: Completed) -> Completed:
    """Keep ``task``'s output as the artifact it asked for; ``done`` with the artifact's
    id, or with why it could not be kept (the task completes either way).

    Runs in the task's session, before the Queue hears it completed, so the id is in its
    ``end`` event. Cancelled while the store writes, the write completes (the store's
    promise) and the task is not told: its artifact stays, with the task's id.
    """
    keep = task.request.artifact
    assert keep is not None
    if store is None:
        return attrs.evolve(done, artifact_error="this pool keeps no artifacts")
    try:
        artifact, _ = await store.put(
            output_text(task).encode(),
            kind=keep.kind,
            media_type=TEXT_MEDIA_TYPE,
            tags=keep.tags,
            session_id=task.request.session_id,
            task_id=task.id,
        )
    except Refusal as exc:
        return attrs.evolve(done, artifact_error=f"{exc.code}: {exc.message}")
    except CatalogError as exc:
        log.error("could not keep the output of task %s: %s", task.id, exc)
        return attrs.evolve(done, artifact_error="the artifact store failed; see the server log")
    return attrs.evolve(done, artifact_id=artifact.id)
