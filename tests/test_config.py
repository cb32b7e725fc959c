"""Tests for orchestra.config: strict TOML, one line per problem, every problem at once."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra.config import (
    AdapterConfig,
    AdmissionConfig,
    AuthConfig,
    Config,
    ConfigError,
    ReplicaConfig,
    StreamsConfig,
    load_config,
    parse_config,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value) == "\n".join(info.value.problems)
    for line in info.value.problems:
        assert "\n" not in line and line.strip() == line
    return list(info.value.problems)


def problems_of_file(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return list(info.value.problems)


# -- files ---------------------------------------------------------------------------------


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")
    config = load_config(path)
    assert config == Config()
    assert config.bind_addr == "127.0.0.1:8080"
    assert config.shutdown_grace_s == 30.0
    assert config.auth == AuthConfig(token="", optional=True, trust_proxy_auth=False)
    assert config.admission == AdmissionConfig(
        queue_capacity=16, ctx_limit=2048, max_tokens_limit=1024
    )
    assert config.streams == StreamsConfig(retention_s=300.0, orphan_grace_ms=10_000)
    assert config.adapter == AdapterConfig(
        engine="llamacpp",
        endpoint="http://127.0.0.1:8081",
        connect_timeout_s=5.0,
        decode_timeout_s=60.0,
    )
    assert config.replica is None
    assert (config.bind_host, config.bind_port, config.bind_is_loopback) == (
        "127.0.0.1",
        8080,
        True,
    )


def test_load_accepts_str_and_pathlike(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[admission]\nqueue_capacity = 3\n")
    assert load_config(str(path)).admission.queue_capacity == 3
    assert load_config(path).admission.queue_capacity == 3


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    [line] = problems_of_file(path)
    assert line.startswith(f"config: cannot read {path}")
    assert "No such file" in line


def test_directory_is_unreadable(tmp_path: Path) -> None:
    [line] = problems_of_file(tmp_path)
    assert line.startswith(f"config: cannot read {tmp_path}")


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('bind_addr = "127.0.0.1:8080"\n[admission\nqueue_capacity = 1\n')
    [line] = problems_of_file(path)
    assert line.startswith(f"config: {path} is not valid TOML: ")
    assert "line 2" in line and "column" in line


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[auth]\ntoken = "caf\xe9"\n')
    [line] = problems_of_file(path)
    assert line.startswith(f"config: {path} is not UTF-8")


def test_file_problems_are_reported_like_parse_problems(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[auth]\ntokn = "x"\n[admission]\nqueue_capacity = 0\n')
    assert problems_of_file(path) == [
        "auth.tokn: unknown key",
        "admission.queue_capacity: must be between 1 and 10000 (got 0)",
    ]


@pytest.mark.parametrize("name", ["orchestra.toml", "attached.toml", "cuda.toml"])
def test_example_configs_load(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert config.bind_is_loopback


def test_example_attached_config_is_attached() -> None:
    config = load_config(CONFIGS / "attached.toml")
    assert config.replica is None
    assert config.adapter.endpoint == "http://127.0.0.1:8081"
    # Every key is written out, at its default.
    assert config == Config()


def test_default_config_owns_a_cpu_replica_on_the_cached_engine() -> None:
    config = load_config(CONFIGS / "orchestra.toml")
    # Every key is written out, at its default, with [replica] present.
    assert config == Config(replica=ReplicaConfig())
    assert config.replica is not None
    assert config.replica.binary == "" and config.replica.model == ""
    assert config.replica.gpu_layers == 0


def test_example_cuda_config_owns_a_gpu_replica() -> None:
    config = load_config(CONFIGS / "cuda.toml")
    assert config.replica == ReplicaConfig(ctx_size=8192, parallel=4, threads=8, gpu_layers=999)
    # The per-slot context covers what admission lets a task ask for.
    assert config.admission.ctx_limit <= config.replica.ctx_size // config.replica.parallel


# -- unknown keys ----------------------------------------------------------------------------


def test_unknown_top_level_key() -> None:
    assert problems({"bind": "127.0.0.1:8080"}) == ["bind: unknown key"]


def test_unknown_nested_key() -> None:
    assert problems({"auth": {"tokn": "x"}}) == ["auth.tokn: unknown key"]


def test_several_unknown_keys_give_several_lines() -> None:
    found = problems(
        {
            "zzz": 1,
            "aaa": {"b": 2},
            "auth": {"tokn": "x", "optinal": False},
            "replica": {"modle": "m.gguf"},
        }
    )
    assert sorted(found) == [
        "aaa: unknown key",
        "auth.optinal: unknown key",
        "auth.tokn: unknown key",
        "replica.modle: unknown key",
        "zzz: unknown key",
    ]


def test_odd_key_names_stay_on_one_line() -> None:
    found = problems({"a.b": 1, "x\ny": 2, "auth": {"with space": 3}})
    assert sorted(found) == [
        '"a.b": unknown key',
        '"x\\ny": unknown key',
        'auth."with space": unknown key',
    ]


# -- types -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "line"),
    [
        # int fields take only integers
        (
            {"admission": {"ctx_limit": "big"}},
            'admission.ctx_limit: expected an integer (got "big")',
        ),
        (
            {"admission": {"queue_capacity": "5"}},
            'admission.queue_capacity: expected an integer (got "5")',
        ),
        (
            {"admission": {"queue_capacity": True}},
            "admission.queue_capacity: expected an integer (got true)",
        ),
        (
            {"streams": {"orphan_grace_ms": 1.5}},
            "streams.orphan_grace_ms: expected an integer (got 1.5)",
        ),
        (
            {"replica": {"parallel": 2.0}},
            "replica.parallel: expected an integer (got 2.0)",
        ),
        # float fields take integers and floats, nothing else
        ({"shutdown_grace_s": "1"}, 'shutdown_grace_s: expected a number (got "1")'),
        ({"streams": {"retention_s": False}}, "streams.retention_s: expected a number (got false)"),
        (
            {"adapter": {"decode_timeout_s": float("inf")}},
            "adapter.decode_timeout_s: must be a finite number (got inf)",
        ),
        (
            {"streams": {"retention_s": float("nan")}},
            "streams.retention_s: must be a finite number (got nan)",
        ),
        # bool fields take only booleans
        ({"auth": {"optional": 1}}, "auth.optional: expected true or false (got 1)"),
        ({"auth": {"optional": "yes"}}, 'auth.optional: expected true or false (got "yes")'),
        # str fields take only strings
        ({"auth": {"token": 1234}}, "auth.token: expected a string (got 1234)"),
        ({"bind_addr": 8080}, "bind_addr: expected a string (got 8080)"),
        ({"adapter": {"engine": ["llamacpp"]}}, "adapter.engine: expected a string (got an array)"),
        # tuple[str, ...] takes only an array of strings
        (
            {"replica": {"extra_args": ["--mlock", 3]}},
            "replica.extra_args: expected an array of strings (got 3 at index 1)",
        ),
        (
            {"replica": {"extra_args": "--mlock"}},
            'replica.extra_args: expected an array of strings (got "--mlock")',
        ),
        # sections must be tables
        ({"auth": "secret"}, 'auth: expected a table (got "secret")'),
        ({"replica": True}, "replica: expected a table (got true)"),
        ({"admission": [1, 2]}, "admission: expected a table (got an array)"),
    ],
)
def test_wrong_types(data: dict[str, Any], line: str) -> None:
    assert problems(data) == [line]


def test_the_top_level_must_be_a_table() -> None:
    assert problems(["not", "a", "table"]) == ["config: expected a table (got an array)"]


def test_ints_are_accepted_for_floats_and_kept_as_floats() -> None:
    config = parse_config({"shutdown_grace_s": 0, "adapter": {"decode_timeout_s": 2}})
    assert config.shutdown_grace_s == 0.0 and isinstance(config.shutdown_grace_s, float)
    assert isinstance(config.adapter.decode_timeout_s, float)


def test_long_values_are_shortened_in_messages() -> None:
    [line] = problems({"admission": {"ctx_limit": "x" * 500}})
    assert line == f'admission.ctx_limit: expected an integer (got "{"x" * 57}...")'


# -- ranges ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (
            {"admission": {"queue_capacity": 0}},
            "admission.queue_capacity: must be between 1 and 10000 (got 0)",
        ),
        (
            {"admission": {"queue_capacity": 10_001}},
            "admission.queue_capacity: must be between 1 and 10000 (got 10001)",
        ),
        (
            {"admission": {"ctx_limit": 15, "max_tokens_limit": 8}},
            "admission.ctx_limit: must be at least 16 (got 15)",
        ),
        (
            {"admission": {"max_tokens_limit": 0}},
            "admission.max_tokens_limit: must be at least 1 (got 0)",
        ),
        ({"streams": {"retention_s": -0.5}}, "streams.retention_s: must be at least 0 (got -0.5)"),
        (
            {"streams": {"orphan_grace_ms": -1}},
            "streams.orphan_grace_ms: must be at least 0 (got -1)",
        ),
        ({"shutdown_grace_s": -1}, "shutdown_grace_s: must be at least 0 (got -1)"),
        (
            {"adapter": {"connect_timeout_s": 0}},
            "adapter.connect_timeout_s: must be more than 0 (got 0)",
        ),
        (
            {"adapter": {"decode_timeout_s": -2.5}},
            "adapter.decode_timeout_s: must be more than 0 (got -2.5)",
        ),
        ({"replica": {"ctx_size": 8}}, "replica.ctx_size: must be at least 16 (got 8)"),
        ({"replica": {"parallel": 0}}, "replica.parallel: must be between 1 and 256 (got 0)"),
        ({"replica": {"parallel": 257}}, "replica.parallel: must be between 1 and 256 (got 257)"),
        ({"replica": {"threads": 0}}, "replica.threads: must be at least 1 (got 0)"),
        ({"replica": {"gpu_layers": -1}}, "replica.gpu_layers: must be at least 0 (got -1)"),
        (
            {"replica": {"extra_args": ["--mlock", "--port=9"]}},
            "replica.extra_args: --port is set by orchestra from [replica] and adapter.endpoint; use those keys instead",
        ),
        (
            {"replica": {"extra_args": ["--no-jinja"]}},
            "replica.extra_args: --no-jinja: orchestra always starts llama-server with --jinja (chats are rendered with the model's own template)",
        ),
        (
            {"replica": {"extra_args": ["-ngl", "3"]}},
            "replica.extra_args: -ngl is set by orchestra from [replica] and adapter.endpoint; use those keys instead",
        ),
        ({"replica": {"crash_limit": 0}}, "replica.crash_limit: must be at least 1 (got 0)"),
        ({"replica": {"stop_grace_s": -1}}, "replica.stop_grace_s: must be at least 0 (got -1)"),
        (
            {"replica": {}, "adapter": {"endpoint": "http://10.0.0.2:8081"}},
            'adapter.endpoint: with [replica] or [models], orchestra starts llama-server on this address, so it must be http://127.0.0.1:PORT with an explicit port (got "http://10.0.0.2:8081")',
        ),
        (
            {"replica": {}, "adapter": {"endpoint": "http://127.0.0.1"}},
            'adapter.endpoint: with [replica] or [models], orchestra starts llama-server on this address, so it must be http://127.0.0.1:PORT with an explicit port (got "http://127.0.0.1")',
        ),
        (
            {"auth": {"token": "has space"}},
            "auth.token: must be printable ASCII without spaces",
        ),
    ],
)
def test_ranges(data: dict[str, Any], line: str) -> None:
    assert problems(data) == [line]


def test_range_edges_are_accepted() -> None:
    config = parse_config(
        {
            "shutdown_grace_s": 0,
            "admission": {"queue_capacity": 10_000, "ctx_limit": 16, "max_tokens_limit": 15},
            "streams": {"retention_s": 0, "orphan_grace_ms": 0},
            "adapter": {"connect_timeout_s": 0.001, "decode_timeout_s": 0.001},
            "replica": {"ctx_size": 16, "parallel": 256, "threads": 1, "gpu_layers": 0},
        }
    )
    assert config.admission.queue_capacity == 10_000
    assert parse_config({"admission": {"queue_capacity": 1}}).admission.queue_capacity == 1
    assert parse_config({"replica": {"parallel": 1}}).replica == ReplicaConfig()


@pytest.mark.parametrize(
    ("limits", "line"),
    [
        (
            {"ctx_limit": 100, "max_tokens_limit": 100},
            "admission.max_tokens_limit: must be less than admission.ctx_limit (100 >= 100)",
        ),
        (
            {"max_tokens_limit": 4096},
            "admission.max_tokens_limit: must be less than admission.ctx_limit (4096 >= 2048)",
        ),
        (
            {"ctx_limit": 512},
            "admission.max_tokens_limit: must be less than admission.ctx_limit (1024 >= 512)",
        ),
    ],
)
def test_max_tokens_limit_must_be_below_ctx_limit(limits: dict[str, int], line: str) -> None:
    assert problems({"admission": limits}) == [line]


# -- bind_addr and auth -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "addr",
    [
        "8080",
        ":8080",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:http",
        "127.0.0.1:-1",
        "127.0.0.1:+80",
        "127.0.0.1:\u0663",  # a non-ASCII digit
        "::1:8080",
        "[::1]",
        "[::1]:",
        "[127.0.0.1]:8080",
        "[nonsense]:8080",
        "999.1.1.1:8080",
        "bad host:8080",
        "-bad-:8080",
        "",
        "http://127.0.0.1:8080",
    ],
)
def test_bad_bind_addr(addr: str) -> None:
    [line] = problems({"bind_addr": addr})
    assert line.startswith("bind_addr: must be host:port, with [brackets] around an IPv6 address")


def test_bind_port_out_of_range() -> None:
    assert problems({"bind_addr": "127.0.0.1:65536"}) == [
        "bind_addr: port must be between 0 and 65535 (got 65536)"
    ]


@pytest.mark.parametrize(
    ("addr", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("127.1.2.3:0", "127.1.2.3", 0),
        ("localhost:65535", "localhost", 65535),
        ("LocalHost:8080", "LocalHost", 8080),
        ("[::1]:8080", "::1", 8080),
        ("[0:0:0:0:0:0:0:1]:9", "0:0:0:0:0:0:0:1", 9),
    ],
)
def test_loopback_binds_need_no_token(addr: str, host: str, port: int) -> None:
    config = parse_config({"bind_addr": addr})
    assert (config.bind_host, config.bind_port, config.bind_is_loopback) == (host, port, True)


@pytest.mark.parametrize(
    "addr", ["0.0.0.0:8080", "192.168.1.10:8080", "[::]:8080", "[fe80::1]:80", "myhost.lan:80"]
)
def test_non_loopback_bind_needs_a_token(addr: str) -> None:
    assert problems({"bind_addr": addr}) == [
        f"auth.token: required when bind_addr ({addr}) is not loopback (set auth.token, "
        "auth.token_file or $ORCHESTRA_TOKEN)"
    ]
    config = parse_config({"bind_addr": addr, "auth": {"token": "s3cret"}})
    assert not config.bind_is_loopback
    assert config.auth.token == "s3cret"


def test_non_loopback_bind_error_text() -> None:
    assert problems({"bind_addr": "0.0.0.0:8080", "auth": {"token": ""}}) == [
        "auth.token: required when bind_addr (0.0.0.0:8080) is not loopback (set auth.token, "
        "auth.token_file or $ORCHESTRA_TOKEN)"
    ]


def test_ipv6_bind_host_has_no_brackets() -> None:
    config = parse_config({"bind_addr": "[2001:db8::1]:443", "auth": {"token": "t"}})
    assert (config.bind_host, config.bind_port) == ("2001:db8::1", 443)


# -- adapter -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:8081",
        "http://127.0.0.1:8081/",
        "https://engine.lan",
        "http://[::1]:8081",
        "http://engine:80",
    ],
)
def test_good_endpoints(endpoint: str) -> None:
    assert parse_config({"adapter": {"endpoint": endpoint}}).adapter.endpoint == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        "",
        "127.0.0.1:8081",
        "ftp://127.0.0.1:8081",
        "http://",
        "http://:8081",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:port",
        "http://127.0.0.1:",
        "http://127.0.0.1:0",
        "http://127.0.0.1:8081/v1",
        "http://127.0.0.1:8081/?x=1",
        "http://127.0.0.1:8081#frag",
        "http://user:pw@127.0.0.1:8081",
        "http://127.0.0.1 :8081",
    ],
)
def test_bad_endpoints(endpoint: str) -> None:
    [line] = problems({"adapter": {"endpoint": endpoint}})
    assert line.startswith("adapter.endpoint: must be a base URL like http://127.0.0.1:8081 (got ")


def test_unsupported_engine() -> None:
    assert problems({"adapter": {"engine": "vllm"}}) == [
        'adapter.engine: only "llamacpp" is supported (got "vllm")'
    ]


# -- replica ----------------------------------------------------------------------------------


def test_replica_absent_is_attached_mode() -> None:
    assert parse_config({"adapter": {}}).replica is None


def test_empty_replica_table_is_owned_mode_with_defaults() -> None:
    replica = parse_config({"replica": {}}).replica
    assert replica == ReplicaConfig(
        binary="",
        model="",
        ctx_size=2048,
        parallel=1,
        threads=2,
        gpu_layers=0,
        extra_args=(),
    )


def test_replica_values() -> None:
    replica = parse_config(
        {
            "replica": {
                "binary": "/opt/llama/bin/llama-server",
                "model": "models/m.gguf",
                "ctx_size": 4096,
                "parallel": 2,
                "threads": 4,
                "gpu_layers": 999,
                "extra_args": ["--mlock", "--seed", "1"],
            }
        }
    ).replica
    assert replica is not None
    assert replica.extra_args == ("--mlock", "--seed", "1")
    assert replica.gpu_layers == 999


# -- everything at once ---------------------------------------------------------------------


def test_all_problems_are_reported_together() -> None:
    found = problems(
        {
            "bind_addr": "0.0.0.0:8080",
            "shutdown_grace_s": "soon",
            "auth": {"tokn": "x"},
            "admission": {"queue_capacity": 0, "ctx_limit": "big", "max_tokens_limit": True},
            "streams": {"orphan_grace_ms": -5},
            "adapter": {"engine": "vllm", "endpoint": "http://h/path"},
            "replica": {"parallel": 0, "extra_args": [1]},
            "extra": 1,
        }
    )
    assert sorted(found) == sorted(
        [
            'shutdown_grace_s: expected a number (got "soon")',
            "auth.tokn: unknown key",
            "admission.queue_capacity: must be between 1 and 10000 (got 0)",
            'admission.ctx_limit: expected an integer (got "big")',
            "admission.max_tokens_limit: expected an integer (got true)",
            "streams.orphan_grace_ms: must be at least 0 (got -5)",
            'adapter.engine: only "llamacpp" is supported (got "vllm")',
            'adapter.endpoint: must be a base URL like http://127.0.0.1:8081 (got "http://h/path")',
            "replica.parallel: must be between 1 and 256 (got 0)",
            "replica.extra_args: expected an array of strings (got 1 at index 0)",
            "extra: unknown key",
            # cross-key rules still run, because the keys they read are valid
            "auth.token: required when bind_addr (0.0.0.0:8080) is not loopback (set auth.token, "
            "auth.token_file or $ORCHESTRA_TOKEN)",
        ]
    )


def test_cross_key_rules_skip_keys_that_are_already_wrong() -> None:
    # A bad token type is reported once, not also as "required".
    assert problems({"bind_addr": "0.0.0.0:8080", "auth": {"token": 5}}) == [
        "auth.token: expected a string (got 5)"
    ]
    assert problems({"bind_addr": "0.0.0.0:8080", "auth": "x"}) == [
        'auth: expected a table (got "x")'
    ]
    # A bad ctx_limit is not compared with max_tokens_limit.
    assert problems({"admission": {"ctx_limit": "1", "max_tokens_limit": 4096}}) == [
        'admission.ctx_limit: expected an integer (got "1")'
    ]


def test_config_error_is_an_exception_with_lines() -> None:
    error = ConfigError(["a: one", "b: two"])
    assert error.problems == ("a: one", "b: two")
    assert str(error) == "a: one\nb: two"
    assert isinstance(error, Exception)


# -- property ---------------------------------------------------------------------------------

KNOWN = {field.name for field in attrs.fields(Config)}
toml_values = st.one_of(
    st.integers(),
    st.booleans(),
    st.text(max_size=5),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
bare_keys = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=12)


@given(extra=st.dictionaries(bare_keys.filter(lambda k: k not in KNOWN), toml_values, min_size=1))
def test_every_extra_top_level_key_is_named(extra: dict[str, Any]) -> None:
    found = problems(extra)
    assert sorted(found) == sorted(f"{key}: unknown key" for key in extra)


@given(
    extra=st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: k not in KNOWN), toml_values, min_size=1
    )
)
def test_any_extra_key_name_is_reported_on_one_line(extra: dict[str, Any]) -> None:
    found = problems({**extra, "admission": {"queue_capacity": 3}})
    assert len(found) == len(extra)
    assert all(line.endswith(": unknown key") for line in found)


# -- several models: [models.ID], default_model, [placement] ---------------------------------

MODEL_ID_RULE = "use 1 to 128 letters, digits, '.', '_', ':' or '-'"


def test_example_replicas_config_loads() -> None:
    config = load_config(CONFIGS / "replicas.toml")
    smol = config.models["smol"]
    assert smol.owned_replicas == 2 and smol.replica().threads == 1
    assert smol.keep_loaded and not smol.endpoints


def test_example_models_config_loads() -> None:
    config = load_config(CONFIGS / "models.toml")
    assert config.bind_is_loopback
    assert config.replica is None
    assert list(config.models) == ["smollm2", "gemma3"]
    smollm2, gemma3 = config.models["smollm2"], config.models["gemma3"]
    assert smollm2.path == "" and smollm2.aliases == ("smol",)
    assert smollm2.keep_loaded and smollm2.embeddings
    assert gemma3.path == "~/.cache/orchestra/models/gemma-3-270m-q4_k_m.gguf"
    assert gemma3.aliases == ("gemma", "g3") and gemma3.idle_unload_s == 120.0
    assert not gemma3.keep_loaded and not gemma3.embeddings
    assert config.default_model == "smol"  # an alias
    assert config.placement.memory_budget_mb == 1024
    # Every per-slot context covers what admission lets a task ask for.
    for model in config.models.values():
        assert config.admission.ctx_limit <= model.ctx_size // model.parallel


def test_a_models_table_takes_the_defaults_and_the_engine_keys_of_replica() -> None:
    config = parse_config({"models": {"a": {}, "b": {"path": "/m/b.gguf", "threads": 4}}})
    a, b = config.models["a"], config.models["b"]
    assert (a.path, a.aliases, a.keep_loaded, a.idle_unload_s) == ("", (), False, 300.0)
    assert (a.memory_mb, a.embeddings) == (0, False)
    assert b.replica() == ReplicaConfig(model="/m/b.gguf", threads=4)
    assert config.default_model == "" and config.placement.memory_budget_mb == 0


def test_replica_and_models_together() -> None:
    assert problems({"replica": {}, "models": {"a": {}}}) == [
        "models: use either [replica] (one model) or [models.ID] tables (several), not both"
    ]


@pytest.mark.parametrize("name", ["a b", "", "x/y", "a" * 129, ".", "..", "é"])
def test_bad_model_id(name: str) -> None:
    shown = '"' + name + '"' if len(name) <= 60 else None
    found = problems({"models": {name: {}}})
    assert len(found) == 1
    assert found[0].startswith("models: ")
    assert found[0].endswith(f"is not a model id: {MODEL_ID_RULE}")
    if shown is not None and name.isascii():
        assert found[0] == f"models: {shown} is not a model id: {MODEL_ID_RULE}"


def test_good_model_ids_and_aliases() -> None:
    names = ["gemma3", "gemma-3:270m", "Qwen2.5_0.5B", "a" * 128, "...", "-"]
    config = parse_config({"models": {name: {} for name in names}})
    assert list(config.models) == names
    config = parse_config({"models": {"a": {"aliases": ["b.c", "d:e", "F-1"]}}})
    assert config.models["a"].aliases == ("b.c", "d:e", "F-1")


def test_unknown_key_in_a_models_table() -> None:
    assert problems({"models": {"a": {"pth": "m.gguf"}}}) == ["models.a.pth: unknown key"]


def test_bad_values_in_a_models_table_name_the_key() -> None:
    found = problems(
        {
            "models": {
                "a": {"aliases": ["x/y"], "idle_unload_s": -1, "memory_mb": "300"},
                "b": {"keep_loaded": 1},
            }
        }
    )
    assert sorted(found) == [
        f'models.a.aliases: "x/y" is not a model id: {MODEL_ID_RULE}',
        "models.a.idle_unload_s: must be at least 0 (got -1)",
        'models.a.memory_mb: expected an integer (got "300")',
        "models.b.keep_loaded: expected true or false (got 1)",
    ]


def test_a_models_entry_must_be_a_table() -> None:
    assert problems({"models": {"a": 3}}) == ["models.a: expected a table (got 3)"]


@pytest.mark.parametrize(
    ("models", "line"),
    [
        (
            {"a": {"aliases": ["b"]}, "b": {}},
            'models.a.aliases: "b" already names model "b"',
        ),
        (
            {"a": {"aliases": ["x"]}, "b": {"aliases": ["x"]}},
            'models.b.aliases: "x" already names model "a"',
        ),
        (
            {"a": {"aliases": ["a"]}},
            'models.a.aliases: "a" already names model "a"',
        ),
        (
            {"a": {"aliases": ["x", "x"]}},
            'models.a.aliases: "x" already names model "a"',
        ),
    ],
    ids=["another-models-id", "twice-across-models", "its-own-id", "repeated"],
)
def test_alias_collision(models: dict[str, Any], line: str) -> None:
    assert problems({"models": models}) == [line]


def test_default_model_must_name_a_model() -> None:
    assert problems({"models": {"a": {}, "b": {}}, "default_model": "zz"}) == [
        'default_model: "zz" is not the id or alias of a model in [models] (known: a, b)'
    ]
    assert problems({"default_model": "zz"}) == [
        'default_model: "zz" is not the id or alias of a model in [models] '
        "(known: none: there is no [models] table)"
    ]


def test_default_model_may_be_an_id_or_an_alias() -> None:
    models = {"a": {}, "b": {"aliases": ["bee"]}}
    assert parse_config({"models": models, "default_model": "b"}).default_model == "b"
    assert parse_config({"models": models, "default_model": "bee"}).default_model == "bee"


def test_a_model_larger_than_the_budget_even_alone() -> None:
    data = {
        "models": {"a": {"memory_mb": 600}, "b": {"memory_mb": 100, "keep_loaded": True}},
        "placement": {"memory_budget_mb": 500},
    }
    assert problems(data) == [
        "models.a.memory_mb: 600 MiB does not fit placement.memory_budget_mb (500 MiB) even alone"
    ]


def test_keep_loaded_models_that_do_not_fit_together() -> None:
    data = {
        "models": {
            "a": {"memory_mb": 300, "keep_loaded": True},
            "b": {"memory_mb": 300, "keep_loaded": True},
            "c": {"memory_mb": 400},
        },
        "placement": {"memory_budget_mb": 500},
    }
    assert problems(data) == [
        "placement.memory_budget_mb: the keep_loaded models take 600 MiB together, more than "
        "the budget (500 MiB)"
    ]


def test_memory_fits_exactly_and_a_zero_budget_is_checked_at_start() -> None:
    exact = {
        "models": {"a": {"memory_mb": 500, "keep_loaded": True}, "b": {"memory_mb": 500}},
        "placement": {"memory_budget_mb": 500},
    }
    assert parse_config(exact).placement.memory_budget_mb == 500
    # 0 = the machine's memory, which is only known when the service starts.
    machine = {"models": {"a": {"memory_mb": 10**9, "keep_loaded": True}}}
    assert parse_config(machine).models["a"].memory_mb == 10**9


def test_placement_keys() -> None:
    assert problems({"placement": {"budget_mb": 1}}) == ["placement.budget_mb: unknown key"]
    assert problems({"placement": {"memory_budget_mb": -1}}) == [
        "placement.memory_budget_mb: must be at least 0 (got -1)"
    ]


def test_models_need_a_loopback_endpoint_with_a_port() -> None:
    assert problems({"models": {"a": {}}, "adapter": {"endpoint": "http://localhost:8081"}}) == [
        "adapter.endpoint: with [replica] or [models], orchestra starts llama-server on this "
        'address, so it must be http://127.0.0.1:PORT with an explicit port (got "http://localhost:8081")'
    ]


def test_every_model_problem_is_reported_together() -> None:
    found = problems(
        {
            "replica": {},
            "models": {"a": {"aliases": ["b"], "memory_mb": 900}, "b": {}},
            "default_model": "zz",
            "placement": {"memory_budget_mb": 800},
        }
    )
    assert found == [
        "models: use either [replica] (one model) or [models.ID] tables (several), not both",
        'models.a.aliases: "b" already names model "b"',
        'default_model: "zz" is not the id or alias of a model in [models] (known: a, b)',
        "models.a.memory_mb: 900 MiB does not fit placement.memory_budget_mb (800 MiB) even alone",
    ]
