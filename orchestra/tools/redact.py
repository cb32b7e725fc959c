"""Secrets in tool calls (``[tools.secrets]``): which values are secret, and their removal.

:class:`Secrets` is the table compiled. :meth:`Secrets.for_call` makes the
:class:`Scrubber` of one call: the values of its secret headers (and the credentials in
them: ``Bearer <token>`` gives the token too; a ``Cookie`` gives each cookie's value) and
the configured patterns. The tools scrub with it everything they log or audit, and, with
``redact_output``, the answer. Each secret value is also handed to the process's log
redactor (:meth:`orchestra.obs.logs.Redactor.add_transient`, which keeps the newest few
hundred), so that no other log line can carry it either.

Values shorter than :data:`MIN_SECRET` characters are not scrubbed: removing every ``a``
from a page would ruin the answer without protecting anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from orchestra.config import SecretsConfig
from orchestra.obs import logs

REDACTED: Final = logs.REDACTED
"""What a secret is replaced with: ``[redacted]``."""
MIN_SECRET: Final = 6
"""Secret values shorter than this are not scrubbed."""


@attrs.define
class Scrubber:
    """The secrets of one call: :meth:`scrub` replaces each of them, then each match of a
    pattern, with ``[redacted]``. Grows when a policy hook adds secret headers."""

    patterns: tuple[re.Pattern[str], ...] = ()
    values: list[str] = attrs.field(factory=list, repr=False)

    def add(self, value: str) -> None:
        if len(value) >= MIN_SECRET and value not in self.values:
            self.values.append(value)
            self.values.sort(key=len, reverse=True)  # one that holds another goes whole
            logs.redactor.add_transient(value)

    def scrub(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, REDACTED)
        for pattern in self.patterns:
            text = pattern.sub(REDACTED, text)
        return text

    def scrub_all(self, texts: Iterable[str]) -> list[str]:
        return [self.scrub(text) for text in texts]


def _credentials(name: str, value: str) -> list[str]:
    """The secret parts of a header's value besides the whole of it."""
    parts = []
    scheme, _, rest = value.strip().partition(" ")
    if rest.strip() and scheme.isalpha():
        parts.append(rest.strip())  # Authorization: Bearer <token>, Basic <...>
    if name.lower() == "cookie":
        for cookie in value.split(";"):
            parts.append(cookie.partition("=")[2].strip())
    return parts


@attrs.frozen
class Secrets:
    """``[tools.secrets]`` compiled: secret header names (lower case), the patterns, and
    whether the answer is redacted too."""

    header_names: frozenset[str] = frozenset()
    patterns: tuple[re.Pattern[str], ...] = ()
    redact_output: bool = True

    @classmethod
    def from_config(cls, config: SecretsConfig) -> Secrets:
        return cls(
            frozenset(name.lower() for name in config.headers),
            tuple(re.compile(pattern) for pattern in config.patterns),
            config.redact_output,
        )

    def is_secret(self, header_name: str) -> bool:
        return header_name.lower() in self.header_names

    def for_call(self, headers: Mapping[str, str] | None = None) -> Scrubber:
        """The scrubber of a call sending ``headers``."""
        scrubber = Scrubber(self.patterns)
        self.add_headers(scrubber, headers or {})
        return scrubber

    def add_headers(self, scrubber: Scrubber, headers: Mapping[str, str]) -> None:
        """Add the secrets of ``headers`` to ``scrubber``."""
        for name, value in headers.items():
            if self.is_secret(name):
                scrubber.add(value)
                for part in _credentials(name, value):
                    scrubber.add(part)

    def without_secrets(self, headers: Mapping[str, str]) -> dict[str, str]:
        """``headers`` but the secret ones (what goes on to another origin on a redirect)."""
        return {name: value for name, value in headers.items() if not self.is_secret(name)}
