"""Secrets: the per-call scrubber, and the process's log redactor (patterns, and a bounded
memory of the secrets calls carried)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra.config import SecretsConfig
from orchestra.obs import logs
from orchestra.tools.redact import Secrets


def test_secret_headers_and_their_credentials_are_scrubbed() -> None:
    secrets = Secrets.from_config(SecretsConfig())
    scrubber = secrets.for_call(
        {
            "AUTHORIZATION": "Basic dXNlcjpwYXNz",
            "Cookie": "a=cookie-one; b=cookie-two",
            "Accept": "text/html",
        }
    )
    assert scrubber.scrub("got dXNlcjpwYXNz") == "got [redacted]"
    assert scrubber.scrub("Basic dXNlcjpwYXNz!") == "[redacted]!"
    assert scrubber.scrub("cookie-one cookie-two") == "[redacted] [redacted]"
    assert scrubber.scrub("text/html") == "text/html"  # not a secret header


def test_very_short_values_are_not_scrubbed() -> None:
    scrubber = Secrets.from_config(SecretsConfig()).for_call({"X-Api-Key": "abc"})
    assert scrubber.scrub("abc abc") == "abc abc"


def test_patterns_are_scrubbed_and_configured_names_are_any_case() -> None:
    secrets = Secrets.from_config(SecretsConfig(headers=("X-Token",), patterns=(r"sk-\w{6,}",)))
    assert secrets.is_secret("x-TOKEN") and not secrets.is_secret("Authorization")
    scrubber = secrets.for_call({"x-token": "token-value-1"})
    assert scrubber.scrub("a sk-abcdefgh and token-value-1") == "a [redacted] and [redacted]"
    assert secrets.without_secrets({"X-Token": "t", "A": "b"}) == {"A": "b"}


@given(
    secret=st.text(st.characters(exclude_characters="[]"), min_size=6, max_size=30).filter(
        lambda s: s not in logs.REDACTED
    ),
    around=st.text(max_size=30),
)
def test_a_scrubbed_text_never_holds_the_secret(secret: str, around: str) -> None:
    """(A secret with a bracket could be spelled anew across the ``[redacted]`` put in its
    place, and one inside the word ``redacted`` is in it.)"""
    scrubber = Secrets.from_config(SecretsConfig()).for_call({"Authorization": secret})
    assert secret not in scrubber.scrub(around + secret + around + secret)


def test_the_log_redactor_remembers_only_the_newest_call_secrets() -> None:
    redactor = logs.Redactor()
    for n in range(logs.TRANSIENT_SECRETS + 10):
        redactor.add_transient(f"transient-secret-{n:05d}")
    assert redactor.scrub("transient-secret-00000") == "transient-secret-00000"
    newest = f"transient-secret-{logs.TRANSIENT_SECRETS + 9:05d}"
    assert redactor.scrub(newest) == logs.REDACTED
    redactor.add("a-service-secret")
    assert redactor.scrub("x a-service-secret y") == f"x {logs.REDACTED} y"


def test_the_log_redactor_scrubs_patterns() -> None:
    redactor = logs.Redactor()
    redactor.add_pattern(r"sk-[a-z]{8}")
    redactor.add_pattern(r"sk-[a-z]{8}")  # the same one twice is kept once
    assert redactor.scrub('{"msg": "key sk-abcdefgh"}') == '{"msg": "key [redacted]"}'
    with pytest.raises(ValueError, match="empty string"):
        redactor.add_pattern("x*")
    with pytest.raises(re.error):
        redactor.add_pattern("(")
