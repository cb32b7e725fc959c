"""The artifact vocabulary: what an artifact is (:class:`Artifact`), what its id, kind and
tags look like, and the checks of a put's arguments, each a problem line for a
:class:`~orchestra.errors.Refusal`. Plain data, no I/O: admission and the HTTP face check
requests with these before anything is written."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

KINDS: Final = ("plan", "summary", "diff", "trace", "text")
"""The named kinds; any other must start with ``x-`` (:data:`KIND_PATTERN`)."""
KIND_PATTERN: Final = re.compile(r"^(plan|summary|diff|trace|text|x-[a-z0-9][a-z0-9._-]{0,62})$")
ID_PATTERN: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
"""An artifact id: ``sha256:`` and the lowercase hex SHA-256 of its content."""
TAG_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,127}$")
"""A tag: 1 to 128 characters, letters, digits and ``._:/@+=-``, not starting with a sign."""
MEDIA_TYPE_PATTERN: Final = re.compile(
    r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
    r"(\s*;\s*[a-z0-9!#$&^_.+-]+=(\"[^\"]*\"|[a-z0-9!#$&^_.+-]+))*$",
    re.IGNORECASE,
)
TEXT_MEDIA_TYPE: Final = "text/plain; charset=utf-8"
"""The media type of content given as text, unless the put names another."""
BYTES_MEDIA_TYPE: Final = "application/octet-stream"
"""The media type of content given as bytes, unless the put names another."""
MAX_TAGS: Final = 64
MAX_PARENTS: Final = 64
MAX_META_BYTES: Final = 16 * 1024
MAX_ID_FIELD: Final = 256
"""The longest ``session_id`` or ``task_id`` an artifact records."""


def artifact_id(content: bytes) -> str:
    """The id of an artifact with ``content``: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(content).hexdigest()


@attrs.frozen(kw_only=True)
class Artifact:
    """One artifact: its content's id and what is known of it (never the content itself,
    which :meth:`~orchestra.artifacts.ArtifactStore.read` gives)."""

    id: str
    """``sha256:<hex>`` of the content."""
    kind: str
    media_type: str
    size_bytes: int
    created_at: str
    """RFC 3339, UTC, when this content was first kept."""
    tags: tuple[str, ...] = ()
    """Sorted, without repeats."""
    parents: tuple[str, ...] = ()
    """The ids of the artifacts it was made from, sorted."""
    session_id: str | None = None
    task_id: str | None = None
    meta: Mapping[str, Any] = attrs.field(factory=dict)
    """A JSON object the putter chose (at most :data:`MAX_META_BYTES` encoded)."""


@attrs.frozen
class LineageNode:
    """An artifact met walking the parent links: how many links away, and its parents."""

    id: str
    kind: str
    depth: int
    """1 for a direct parent (or child), 2 for theirs, and so on."""
    parents: tuple[str, ...]


@attrs.frozen
class Lineage:
    """Everything an artifact was made from (``ancestors``) and everything made from it
    (``descendants``), each nearest first."""

    id: str
    ancestors: tuple[LineageNode, ...]
    descendants: tuple[LineageNode, ...]
    truncated: bool = False
    """The walk stopped at its node limit before reaching the ends."""


@attrs.frozen
class Page:
    """One page of a listing, newest first; ``next_cursor`` continues it (None: the end)."""

    artifacts: tuple[Artifact, ...]
    next_cursor: str | None


@attrs.frozen(kw_only=True)
class Filters:
    """What a listing keeps: each given field must match (tags: the artifact has it)."""

    kind: str | None = None
    tag: str | None = None
    session_id: str | None = None
    task_id: str | None = None
    parent: str | None = None


# -- checks: each returns a problem (without the field's name) or None ----------------------


def kind_problem(value: Any) -> str | None:
    if isinstance(value, str) and KIND_PATTERN.match(value):
        return None
    return f"must be one of {', '.join(KINDS)}, or a name starting with x- (got {_show(value)})"


def id_problem(value: Any) -> str | None:
    if isinstance(value, str) and ID_PATTERN.match(value):
        return None
    return f"must be an artifact id, sha256: and 64 lowercase hex digits (got {_show(value)})"


def tags_problem(value: Any) -> str | None:
    return _list_problem(value, MAX_TAGS, TAG_PATTERN, "tag")


def parents_problem(value: Any) -> str | None:
    return _list_problem(value, MAX_PARENTS, ID_PATTERN, "artifact id")


def tag_problem(value: Any) -> str | None:
    if isinstance(value, str) and TAG_PATTERN.match(value):
        return None
    return f"must be a tag: 1 to 128 letters, digits or ._:/@+=- (got {_show(value)})"


def media_type_problem(value: Any) -> str | None:
    if isinstance(value, str) and MEDIA_TYPE_PATTERN.match(value):
        return None
    return f"must be a media type such as text/markdown (got {_show(value)})"


def meta_problem(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be a JSON object"
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_META_BYTES:
        return f"must be at most {MAX_META_BYTES} bytes as JSON (got {size})"
    return None


def label_problem(value: Any) -> str | None:
    """A ``session_id`` or ``task_id``: a non-empty string, or null."""
    if value is None:
        return None
    ok = isinstance(value, str) and 0 < len(value) <= MAX_ID_FIELD
    return None if ok else f"must be a non-empty string of at most {MAX_ID_FIELD} characters"


def normal_tags(tags: Any) -> tuple[str, ...]:
    """Tags sorted, without repeats."""
    return tuple(sorted(set(tags)))


def _list_problem(value: Any, most: int, pattern: re.Pattern[str], what: str) -> str | None:
    if not isinstance(value, list):
        return f"must be a list of at most {most} of {what}s"
    if len(value) > most:
        return f"must hold at most {most} (got {len(value)})"
    for item in value:
        if not (isinstance(item, str) and pattern.match(item)):
            return f"{_show(item)} is not a valid {what}"
    return None


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
