"""The pure parts of ``POST /v1/embeddings``: checking a body, writing the answer."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given

from orchestra.engine.protocol import Embeddings
from orchestra.errors import ErrorCode, Refusal
from orchestra.http.openai_embeddings import (
    MAX_INPUT_BYTES,
    MAX_INPUTS,
    EmbeddingsRequest,
    embeddings_body,
    encode_vector,
    parse_embeddings,
)


def parse(body: Any) -> EmbeddingsRequest:
    return parse_embeddings(json.dumps(body).encode())


def refusal(body: Any) -> Refusal:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(Refusal) as caught:
        parse_embeddings(raw)
    assert caught.value.code is ErrorCode.INVALID_PARAMS
    return caught.value


def test_a_string_and_a_list_of_strings() -> None:
    assert parse({"input": "hi", "model": "m"}) == EmbeddingsRequest("m", ("hi",), "float")
    parsed = parse({"input": ["a", "b"], "encoding_format": "base64", "user": "u"})
    assert parsed == EmbeddingsRequest(None, ("a", "b"), "base64", "u")
    assert parse({"input": ["x"], "model": None, "dimensions": None}).model is None


def test_the_limits_are_inclusive() -> None:
    assert len(parse({"input": ["a"] * MAX_INPUTS}).inputs) == MAX_INPUTS
    assert parse({"input": "a" * MAX_INPUT_BYTES}).inputs == ("a" * MAX_INPUT_BYTES,)


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({}, "input", "input: required"),
        ({"input": ""}, "input", "input: must not be empty"),
        ({"input": []}, "input", "input: must not be empty"),
        ({"input": ["a", ""]}, "input[1]", "input[1]: must not be empty"),
        ({"input": ["a", 3]}, "input[1]", "input[1]: must be a string (got 3)"),
        ({"input": 5}, "input", "input: must be a string or a list of strings"),
        ({"input": {"text": "a"}}, "input", "input: must be a string or a list of strings"),
        ({"input": [1, 2, 3]}, "input", "input: token arrays are not supported: give text"),
        ({"input": ["a", [1, 2]]}, "input[1]", "input[1]: token arrays are not supported"),
        ({"input": ["a"] * (MAX_INPUTS + 1)}, "input", f"at most {MAX_INPUTS} strings (got 2049)"),
        ({"input": "a" * (MAX_INPUT_BYTES + 1)}, "input", f"at most {MAX_INPUT_BYTES} bytes"),
        ({"input": ["é" * (MAX_INPUT_BYTES // 2 + 1)]}, "input[0]", f"(got {MAX_INPUT_BYTES + 2})"),
        ({"input": "a", "encoding_format": "binary"}, "encoding_format", "one of float, base64"),
        ({"input": "a", "model": ""}, "model", "model: must be a non-empty string"),
        ({"input": "a", "model": 3}, "model", "model: must be a non-empty string"),
        ({"input": "a", "user": 1}, "user", "user: must be a string"),
        ({"input": "a", "dimensions": 8}, "dimensions", "dimensions: not supported by orchestra"),
        ({"input": "a", "stream": True}, "stream", "stream: unknown field"),
        ({"input": "\ud800"}, "input", "input: must be valid Unicode"),
    ],
)
def test_refusals_name_the_field(body: dict[str, Any], param: str, says: str) -> None:
    refused = refusal(body)
    assert refused.param == param
    assert says in refused.message


def test_every_bad_field_is_named_at_once() -> None:
    refused = refusal({"input": ["", "b", ""], "model": "", "colour": "red"})
    assert refused.problems == (
        "colour: unknown field",
        "input[0]: must not be empty",
        'model: must be a non-empty string (got "")',
    )
    assert refused.param == "colour"


@pytest.mark.parametrize("raw", [b"{nope", b"[]", b"\xff"])
def test_a_body_that_is_not_a_json_object(raw: bytes) -> None:
    assert refusal(raw).message.startswith("body: ")


def test_the_answer_in_openais_shape() -> None:
    result = Embeddings(vectors=((0.5, -0.25), (1.0, 0.0)), prompt_tokens=6)
    assert embeddings_body("smol", result) == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -0.25]},
            {"object": "embedding", "index": 1, "embedding": [1.0, 0.0]},
        ],
        "model": "smol",
        "usage": {"prompt_tokens": 6, "total_tokens": 6},
    }
    base64_body = embeddings_body("smol", result, "base64")
    assert (
        base64_body["data"][0]["embedding"]
        == base64.b64encode(
            b"\x00\x00\x00\x3f\x00\x00\x80\xbe"  # 0.5 and -0.25 as little-endian float32
        ).decode()
    )
    json.dumps(base64_body)  # plain JSON values only


_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)
_floats = st.floats(-1e30, 1e30, allow_nan=False, allow_subnormal=False)


@given(
    inputs=st.one_of(_text, st.lists(_text, min_size=1, max_size=8)),
    model=st.one_of(st.none(), _text),
    encoding_format=st.sampled_from(["float", "base64", None]),
    user=st.one_of(st.none(), _text),
    vectors=st.lists(st.lists(_floats, min_size=1, max_size=16), min_size=1, max_size=4),
)
def test_valid_bodies_round_trip_and_base64_decodes_to_the_floats(
    inputs: str | list[str],
    model: str | None,
    encoding_format: str | None,
    user: str | None,
    vectors: list[list[float]],
) -> None:
    body = {"input": inputs, "model": model, "encoding_format": encoding_format, "user": user}
    parsed = parse({k: v for k, v in body.items() if v is not None})
    expected = (inputs,) if isinstance(inputs, str) else tuple(inputs)
    assert parsed.inputs == expected
    assert (parsed.model, parsed.user) == (model, user)
    assert parsed.encoding_format == (encoding_format or "float")
    result = Embeddings(vectors=tuple(tuple(v) for v in vectors), prompt_tokens=len(expected))
    answer = json.loads(json.dumps(embeddings_body("m", result, parsed.encoding_format)))
    assert [item["index"] for item in answer["data"]] == list(range(len(vectors)))
    for item, vector in zip(answer["data"], vectors, strict=True):
        if parsed.encoding_format == "float":
            assert item["embedding"] == vector
            continue
        assert item["embedding"] == encode_vector(vector)
        raw = base64.b64decode(item["embedding"], validate=True)
        decoded = struct.unpack(f"<{len(vector)}f", raw)
        assert decoded == pytest.approx(vector, rel=2**-23)
