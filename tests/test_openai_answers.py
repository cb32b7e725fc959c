"""The OpenAI answer's chunks: the per-token fast path writes the same bytes as the
general one, for any text."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from orchestra.events import EventKind, StreamEvent
from orchestra.http.openai_answers import Answer
from orchestra.task import Endpoint


@given(text=st.text(), endpoint=st.sampled_from(list(Endpoint)), model=st.text(max_size=8))
def test_a_token_chunk_is_the_general_chunk_of_its_text(
    text: str, endpoint: Endpoint, model: str
) -> None:
    answer = Answer(endpoint, "task-1", model, 1700000000, fingerprint="orchestra-x")
    fast = answer.chunk_for(StreamEvent(0, EventKind.TOKEN, {"t": text, "i": 0}))
    assert fast == answer._chunk({"content": text})
    payload = json.loads(fast.removeprefix(b"data: "))
    choice = payload["choices"][0]
    assert (choice["delta"]["content"] if endpoint is Endpoint.CHAT else choice["text"]) == text
