"""``[tools]``, ``[tools.policy]``, ``[tools.secrets]``, ``[tools.search]``: defaults, strict
types, every per-key check naming its key, and the hook imported at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from orchestra.config import ConfigError, ToolsConfig, parse_config
from orchestra.config.tools_tables import DEFAULT_CONTENT_TYPES, DEFAULT_SECRET_HEADERS
from orchestra.tools import Tools
from orchestra.tools.policy import Policy


def problems(tools: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_config({"tools": tools})
    return list(error.value.problems)


def test_the_defaults() -> None:
    tools = parse_config({}).tools
    assert tools == ToolsConfig()
    assert tools.enabled and tools.audit_max_rows == 100_000
    policy = tools.policy
    assert policy.allowed_domains == ("*",) and policy.denied_domains == ()
    assert policy.schemes == ("https", "http") and policy.methods == ("GET", "HEAD")
    assert policy.ports == (80, 443)
    assert policy.max_response_bytes == 1024 * 1024 and policy.max_time_ms == 10_000
    assert policy.content_types == DEFAULT_CONTENT_TYPES
    assert policy.allow_private is False and policy.allowed_networks == ()
    assert policy.max_redirects == 5 and policy.hook == ""
    assert tools.secrets.headers == DEFAULT_SECRET_HEADERS
    assert tools.secrets.patterns == () and tools.secrets.redact_output is True
    assert tools.search.searxng_url == "" and tools.search.max_results == 10


def test_a_full_table_is_taken_as_written() -> None:
    tools = parse_config(
        {
            "tools": {
                "enabled": False,
                "audit_max_rows": 10,
                "policy": {
                    "allowed_domains": ["*.Example.com", "wiki.lan."],
                    "denied_domains": ["bad.example.com"],
                    "schemes": ["https"],
                    "methods": ["GET"],
                    "ports": [443, 8443],
                    "max_response_bytes": 4096,
                    "max_time_ms": 500,
                    "content_types": ["text/html", "application/*+json"],
                    "allow_private": True,
                    "allowed_networks": ["192.168.1.0/24", "fd00::/8"],
                    "max_redirects": 0,
                    "hook": "tests.tools_hooks:allow",
                },
                "secrets": {
                    "headers": ["X-Token"],
                    "patterns": ["sk-[a-z0-9]{8,}"],
                    "redact_output": False,
                },
                "search": {"searxng_url": "http://192.168.1.30:8888/searx", "max_results": 3},
            }
        }
    ).tools
    assert tools.policy.ports == (443, 8443) and tools.policy.max_redirects == 0
    compiled = Policy.from_config(tools.policy)
    assert compiled.allowed_domains == ("*.example.com", "wiki.lan")
    assert [str(n) for n in compiled.allowed_networks] == ["192.168.1.0/24", "fd00::/8"]


@pytest.mark.parametrize(
    ("tools", "line"),
    [
        (
            {"policy": {"allowed_domains": ["a*b"]}},
            'tools.policy.allowed_domains: [0] "a*b": a wildcard is only',
        ),
        (
            {"policy": {"denied_domains": ["ok.com", "-x-.com"]}},
            'tools.policy.denied_domains: [1] "-x-.com" is not a valid domain name',
        ),
        (
            {"policy": {"schemes": ["ftp"]}},
            'tools.policy.schemes: [0] only "http" and "https" (got "ftp")',
        ),
        (
            {"policy": {"methods": ["POST"]}},
            'tools.policy.methods: [0] only "GET" and "HEAD" (got "POST")',
        ),
        (
            {"policy": {"ports": [80, 70000]}},
            "tools.policy.ports: [1] must be between 1 and 65535 (got 70000)",
        ),
        (
            {"policy": {"ports": ["80"]}},
            'tools.policy.ports: expected an array of integers (got "80" at index 0)',
        ),
        ({"policy": {"ports": 80}}, "tools.policy.ports: expected an array of integers (got 80)"),
        (
            {"policy": {"max_response_bytes": 0}},
            "tools.policy.max_response_bytes: must be between 1 and 67108864 (got 0)",
        ),
        (
            {"policy": {"max_time_ms": 0}},
            "tools.policy.max_time_ms: must be between 1 and 600000 (got 0)",
        ),
        (
            {"policy": {"content_types": ["text"]}},
            "tools.policy.content_types: [0] must be a media type",
        ),
        (
            {"policy": {"allow_private": "no"}},
            'tools.policy.allow_private: expected true or false (got "no")',
        ),
        (
            {"policy": {"allowed_networks": ["10.0.0.1/8"]}},
            'tools.policy.allowed_networks: [0] "10.0.0.1/8" has host bits set: did you mean 10.0.0.0/8?',
        ),
        (
            {"policy": {"allowed_networks": ["lan"]}},
            'tools.policy.allowed_networks: [0] must be a network like 192.168.1.0/24 or fd00::/8 (got "lan")',
        ),
        (
            {"policy": {"max_redirects": 21}},
            "tools.policy.max_redirects: must be between 0 and 20 (got 21)",
        ),
        ({"policy": {"hook": "no colon"}}, 'tools.policy.hook: must be "module:function"'),
        (
            {"policy": {"hook": "tests.no_such_module:f"}},
            "tools.policy.hook: cannot import tests.no_such_module: ModuleNotFoundError",
        ),
        (
            {"policy": {"hook": "tests.tools_hooks:missing"}},
            "tools.policy.hook: module tests.tools_hooks has no missing",
        ),
        (
            {"policy": {"hook": "tests.tools_hooks:NOT_CALLABLE"}},
            "tools.policy.hook: tests.tools_hooks:NOT_CALLABLE is not callable",
        ),
        (
            {"secrets": {"patterns": ["(unclosed"]}},
            'tools.secrets.patterns: [0] "(unclosed" is not a valid regular expression',
        ),
        (
            {"secrets": {"patterns": ["ok-[0-9]+", "x*"]}},
            'tools.secrets.patterns: [1] "x*" matches the empty string',
        ),
        (
            {"secrets": {"headers": ["Bad Header"]}},
            'tools.secrets.headers: [0] "Bad Header" is not an HTTP header name',
        ),
        (
            {"search": {"searxng_url": "searx.lan"}},
            'tools.search.searxng_url: must be empty or a URL like http://192.168.1.30:8888 (got "searx.lan")',
        ),
        (
            {"search": {"searxng_url": "http://searx.lan/?q=x"}},
            "tools.search.searxng_url: must be empty or a URL",
        ),
        (
            {"search": {"max_results": 0}},
            "tools.search.max_results: must be between 1 and 100 (got 0)",
        ),
        ({"audit_max_rows": 0}, "tools.audit_max_rows: must be between 1 and 100000000 (got 0)"),
        ({"colour": "blue"}, "tools.colour: unknown key"),
        ({"policy": {"allowed": ["*"]}}, "tools.policy.allowed: unknown key"),
    ],
)
def test_a_bad_value_is_named_with_its_key(tools: dict[str, Any], line: str) -> None:
    found = problems(tools)
    assert len(found) == 1 and found[0].startswith(line), found


def test_every_problem_of_the_tables_is_reported_at_once() -> None:
    found = problems(
        {
            "policy": {"allowed_networks": ["x"], "hook": "x"},
            "secrets": {"patterns": ["("]},
            "search": {"timeout_ms": 0},
        }
    )
    assert sorted(line.split(":")[0] for line in found) == [
        "tools.policy.allowed_networks",
        "tools.policy.hook",
        "tools.search.timeout_ms",
        "tools.secrets.patterns",
    ]


def test_a_hook_that_fails_to_import_at_start_is_a_config_error(tmp_path: Path) -> None:
    """The hook is imported at start too (Tools.open), with the key named."""
    config = ToolsConfig()
    broken = type(config.policy)(hook="tests.tools_hooks_broken:hook")
    with pytest.raises(ConfigError) as error:
        trio.run(Tools.open, ToolsConfig(policy=broken), tmp_path)
    assert error.value.problems[0].startswith(
        "tools.policy.hook: cannot import tests.tools_hooks_broken: ZeroDivisionError"
    )
