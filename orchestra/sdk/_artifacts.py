"""The SDK's typed view of the artifact registry (``/v1/artifacts...``): what an artifact is
(:class:`Artifact`), a page of a listing (:class:`ArtifactPage`) and a lineage
(:class:`Lineage` of :class:`LineageNode`), and the requests that the clients'
artifact calls send.

An artifact is content kept by the server under the id ``sha256:<hex>`` of its bytes, with
a ``kind`` (``plan``, ``summary``, ``diff``, ``trace``, ``text`` or an ``x-`` name), tags,
and parents (the artifacts it was made from). Every class is ``attrs.frozen`` and read by
the SDK's one converter, as strictly as the rest (:class:`~orchestra.sdk.ParseError` for
an answer outside the contract).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import quote

import attrs

from orchestra.sdk._errors import ParseError
from orchestra.task import KeepArtifact

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")
ARTIFACTS_PATH: Final = "/v1/artifacts"

# -- the answers ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Artifact:
    """An artifact's metadata (``GET /v1/artifacts/{id}``, and the answer to a put, a
    retag, an entry of a listing); its content comes from ``read_artifact()``."""

    id: str
    """``sha256:`` and the hex SHA-256 of the content."""
    kind: str
    """``plan``, ``summary``, ``diff``, ``trace``, ``text``, or a name starting ``x-``."""
    media_type: str
    """``text/plain; charset=utf-8`` for content put as text, ``application/octet-stream``
    for bytes, unless the put named another."""
    size_bytes: int
    created_at: str
    """When this content was first kept (RFC 3339, UTC)."""
    tags: tuple[str, ...]
    """Sorted, without repeats."""
    parents: tuple[str, ...]
    """The ids of the artifacts it was made from, sorted."""
    session_id: str | None
    task_id: str | None
    """The task whose output it is (a task's ``artifact`` option), or what the put said."""
    meta: Mapping[str, Any]
    """The JSON object the first put gave (empty when none)."""
    content_url: str
    """Where its raw content is (``/v1/artifacts/{id}?raw=1``)."""


@attrs.frozen(kw_only=True)
class ArtifactPage:
    """One page of ``list_artifacts()``, newest first; pass :attr:`next_cursor` as
    ``cursor`` for the next (None: this is the last)."""

    artifacts: tuple[Artifact, ...]
    next_cursor: str | None


@attrs.frozen(kw_only=True)
class LineageNode:
    """An artifact met walking the parent links from another."""

    id: str
    kind: str
    depth: int
    """1 for a direct parent (or child), 2 for theirs, and so on."""
    parents: tuple[str, ...]
    """Its own parents' ids."""


@attrs.frozen(kw_only=True)
class Lineage:
    """What an artifact was made from and what was made from it
    (``GET /v1/artifacts/{id}/lineage``), each nearest first."""

    id: str
    ancestors: tuple[LineageNode, ...]
    """Its parents, their parents, and so on."""
    descendants: tuple[LineageNode, ...]
    """The artifacts that name it as a parent, theirs, and so on."""
    truncated: bool
    """The server stopped walking at its node limit before reaching the ends."""


@attrs.frozen
class _Deleted:
    """``DELETE /v1/artifacts/{id}``: ``{"deleted": [ids]}``."""

    deleted: tuple[str, ...]


# -- the requests --------------------------------------------------------------------------


def artifact_path(artifact_id: str, *rest: str) -> str:
    """``/v1/artifacts/{id}[/rest...]``, the id quoted as one path segment."""
    return "/".join((ARTIFACTS_PATH, quote(artifact_id, safe=""), *rest))


def put_body(
    content: str | bytes,
    *,
    kind: str,
    media_type: str | None,
    tags: Sequence[str],
    parents: Sequence[str],
    session_id: str | None,
    task_id: str | None,
    meta: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/artifacts``: a ``str`` as ``content`` (kept as its
    UTF-8 bytes), ``bytes`` as ``content_base64``; a field left None is not sent."""
    body: dict[str, Any] = {"kind": kind}
    if isinstance(content, str):
        body["content"] = content
    elif isinstance(content, bytes | bytearray | memoryview):
        body["content_base64"] = base64.b64encode(content).decode("ascii")
    else:
        raise TypeError(f"content must be str or bytes, not {type(content).__name__}")
    for name, items in (("tags", tags), ("parents", parents)):
        if isinstance(items, str):
            raise TypeError(f"{name} must be a sequence of strings, not one string")
        if items:
            body[name] = list(items)
    optional = {"media_type": media_type, "session_id": session_id, "task_id": task_id}
    body.update({name: value for name, value in optional.items() if value is not None})
    if meta is not None:
        body["meta"] = dict(meta)
    return body


def list_params(
    *,
    kind: str | None,
    tag: str | None,
    session_id: str | None,
    task_id: str | None,
    parent: str | None,
    limit: int | None,
    cursor: str | None,
) -> dict[str, str]:
    """The query of ``GET /v1/artifacts``: each filter that is not None."""
    given = {
        "kind": kind,
        "tag": tag,
        "session_id": session_id,
        "task_id": task_id,
        "parent": parent,
        "limit": None if limit is None else str(limit),
        "cursor": cursor,
    }
    return {name: value for name, value in given.items() if value is not None}


def tags_body(add: Sequence[str], remove: Sequence[str]) -> dict[str, list[str]]:
    """The JSON body of ``POST /v1/artifacts/{id}/tags``."""
    if isinstance(add, str) or isinstance(remove, str):
        raise TypeError("add and remove must be sequences of tags, not one string")
    return {"add": list(add), "remove": list(remove)}


def checked_content(artifact_id: str, content: bytes, status: int) -> bytes:
    """``content`` as read for ``artifact_id``; :class:`ParseError` when its hash is not
    the id (the id is the content's SHA-256, so this catches any corruption on the way)."""
    got = "sha256:" + hashlib.sha256(content).hexdigest()
    if got != artifact_id:
        raise ParseError(
            f"GET {artifact_path(artifact_id)}?raw=1: the content read hashes to {got}", status
        )
    return content


# -- a task's ``artifact`` option ----------------------------------------------------------


def keep_artifact(value: KeepArtifact | Mapping[str, Any] | str | None) -> KeepArtifact | None:
    """A task's ``artifact`` option as a :class:`~orchestra.task.KeepArtifact`: one as it
    is, a kind alone (``"summary"``), or ``{"kind": ..., "tags": [...]}``; None for none.
    Raises ``TypeError`` for anything else (before anything is sent)."""
    if value is None:
        return None
    if isinstance(value, KeepArtifact):
        tags: Any = value.tags
        kind: Any = value.kind
    elif isinstance(value, str):
        kind, tags = value, ()
    elif isinstance(value, Mapping):
        if unknown := sorted(set(value) - {"kind", "tags"}):
            raise TypeError(f"artifact: unknown field {unknown[0]!r} (only kind and tags)")
        if "kind" not in value:
            raise TypeError("artifact: a kind is required")
        kind, tags = value["kind"], value.get("tags", ())
    else:
        raise TypeError(
            "artifact must be a KeepArtifact, a kind, or a mapping with kind and tags, "
            f"not {type(value).__name__}"
        )
    if not isinstance(kind, str) or isinstance(tags, str) or not isinstance(tags, Sequence):
        raise TypeError("artifact: kind must be a string and tags a sequence of strings")
    return KeepArtifact(kind, tuple(tags))


def keep_artifact_json(keep: KeepArtifact) -> dict[str, Any]:
    """The wire's ``"artifact": {"kind", "tags"}``."""
    return {"kind": keep.kind, "tags": list(keep.tags)}


# -- the calls -----------------------------------------------------------------------------


class ArtifactCalls:
    """The artifact registry's calls, a part of :class:`~orchestra.sdk.AsyncClient` (which
    derives from this class; they live here, beside their values). Each call is sent,
    retried and its errors mapped by the client's own machinery, as its others are."""

    if TYPE_CHECKING:  # AsyncClient's own, which every call here goes through

        async def _call(
            self,
            method: str,
            path: str,
            cls: type[T],
            body: Mapping[str, Any] | None = None,
            *,
            params: Mapping[str, str] | None = None,
        ) -> T: ...

        async def _request(
            self,
            method: str,
            path: str,
            body: Mapping[str, Any] | None,
            *,
            params: Mapping[str, str] | None = None,
        ) -> httpx.Response: ...

        async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T: ...

    async def put_artifact(
        self,
        content: str | bytes,
        *,
        kind: str,
        media_type: str | None = None,
        tags: Sequence[str] = (),
        parents: Sequence[str] = (),
        session_id: str | None = None,
        task_id: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Keep ``content`` (a ``str`` as its UTF-8 text, ``bytes`` as they are) as an
        artifact of ``kind``; the artifact, whose id is the content's hash. The same
        content again is the same artifact, its ``tags`` and ``parents`` merged (its
        first kind, media type and meta stay). Raises :class:`ServerError`:
        ``INVALID_PARAMS`` (an unknown parent, a bad field), ``CONFLICT`` (a parent made
        from it), ``ARTIFACT_TOO_LARGE`` (413), ``STORAGE_FULL`` (507, with ``details``)."""
        body = put_body(
            content,
            kind=kind,
            media_type=media_type,
            tags=tags,
            parents=parents,
            session_id=session_id,
            task_id=task_id,
            meta=meta,
        )
        return await self._call("POST", ARTIFACTS_PATH, Artifact, body)

    async def get_artifact(self, artifact_id: str) -> Artifact:
        """An artifact's metadata (``NOT_FOUND`` when there is none)."""
        return await self._call("GET", artifact_path(artifact_id), Artifact)

    async def read_artifact(self, artifact_id: str) -> bytes:
        """An artifact's content, checked against its id (else :class:`ParseError`)."""
        path = artifact_path(artifact_id)

        async def once() -> bytes:
            response = await self._request("GET", path, None, params={"raw": "1"})
            return checked_content(artifact_id, response.content, response.status_code)

        return await self._retrying(once)

    async def list_artifacts(
        self,
        *,
        kind: str | None = None,
        tag: str | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        parent: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> ArtifactPage:
        """One page of the artifacts matching every filter given (``tag``: it has that
        tag; ``parent``: made from that one), newest first, ``limit`` of them (server
        default 50, at most 200); the next page is ``cursor=page.next_cursor``."""
        params = list_params(
            kind=kind,
            tag=tag,
            session_id=session_id,
            task_id=task_id,
            parent=parent,
            limit=limit,
            cursor=cursor,
        )
        return await self._call("GET", ARTIFACTS_PATH, ArtifactPage, params=params)

    async def lineage(self, artifact_id: str) -> Lineage:
        """What an artifact was made from and what was made from it, nearest first."""
        return await self._call("GET", artifact_path(artifact_id, "lineage"), Lineage)

    async def tag_artifact(
        self, artifact_id: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> Artifact:
        """Add and remove tags (removing one it lacks is no error); the artifact then."""
        path = artifact_path(artifact_id, "tags")
        return await self._call("POST", path, Artifact, tags_body(add, remove))

    async def delete_artifact(self, artifact_id: str, *, cascade: bool = False) -> tuple[str, ...]:
        """Delete an artifact, and with ``cascade`` every artifact made from it; the ids
        deleted, ``artifact_id`` first. Without ``cascade``, one that others name as a
        parent is refused: ``CONFLICT`` (409), ``details["children"]`` their ids."""
        params = {"cascade": "true"} if cascade else None
        path = artifact_path(artifact_id)
        return (await self._call("DELETE", path, _Deleted, params=params)).deleted
