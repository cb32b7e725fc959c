"""The artifact registry: what agents produce (plans, summaries, diffs, traces), kept by
content hash with tags and lineage, in the data directory.

What is where:

- :mod:`orchestra.artifacts.store`: the :class:`ArtifactStore`, its layout on disk and its
  guarantees (atomic, crash-safe, bounded), in the module docstring.
- :mod:`orchestra.artifacts.model`: the values it hands out (:class:`Artifact`,
  :class:`Lineage`, :class:`Page`) and the checks of a put's arguments.
- :mod:`orchestra.artifacts.blobs`: the content files (temporary file, fsync, rename).
- :mod:`orchestra.artifacts.database`: the SQLite index: schema, queries.
"""

from orchestra.artifacts.model import Artifact as Artifact
from orchestra.artifacts.model import Filters as Filters
from orchestra.artifacts.model import Lineage as Lineage
from orchestra.artifacts.model import LineageNode as LineageNode
from orchestra.artifacts.model import Page as Page
from orchestra.artifacts.model import artifact_id as artifact_id
from orchestra.artifacts.store import ArtifactStore as ArtifactStore
from orchestra.artifacts.store import Limits as Limits
from orchestra.artifacts.store import Usage as Usage

__all__ = [
    "Artifact",
    "ArtifactStore",
    "Filters",
    "Limits",
    "Lineage",
    "LineageNode",
    "Page",
    "Usage",
    "artifact_id",
]
