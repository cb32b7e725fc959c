"""The catalog's values: a model as read from the database, its trust and its state.

Plain values, with no database or file work: :class:`CatalogModel`, :class:`TrustState`,
:class:`ModelState`, and :data:`ID_PATTERN`, what a model id looks like.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Final

import attrs

ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""What a model id looks like (matched in full)."""


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
