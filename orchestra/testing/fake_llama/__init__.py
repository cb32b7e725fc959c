"""A fake llama-server speaking the real engine's native HTTP API, for tests and benchmarks.

It fakes the parts of llama.cpp's ``llama-server`` an HTTP supervisor talks to, with the
shapes and behaviours of ``shared/llama-server-reference.md``:

- ``GET /health`` (and ``/v1/health``), ``GET /props``, ``GET /slots``, ``GET /metrics``,
  ``POST /tokenize`` and ``POST /completion`` (also ``/completions``);
- ``GET /v1/models`` (the one model, named by its path) and ``POST /v1/completions``,
  OpenAI's text completion as the engine writes it (:mod:`.text`), on the same slots and
  words as ``/completion``, with ``stop`` strings as on the chat endpoint;
- ``POST /apply-template`` (a fixed ChatML-like template, :mod:`.template`) and
  ``POST /v1/chat/completions`` (also ``/chat/completions``) in OpenAI's shape as the engine
  writes it, streamed with ``[DONE]``, with ``stop`` strings, ``include_usage`` and tool
  calls (``[[call:NAME]]``, :mod:`.toolcall`), on the same slots and words;
- with ``embeddings`` (``--embeddings``), ``POST /v1/embeddings`` in OpenAI's shape as the
  engine writes it, with deterministic vectors of :data:`EMBEDDING_DIM` floats (mean pooling
  over fixed token vectors, normalized: :func:`embedding`), ``encoding_format`` ``float``
  or ``base64``, the engine's refusals, a slot per request (:mod:`.embeddings`); without
  it, 501 ``This server does not support embeddings. Start it with `--embeddings```;
- with ``api_key`` (``--api-key``), 401 ``Invalid API Key`` on every route but ``/health``
  without ``Authorization: Bearer KEY`` (or ``X-Api-Key``);
- 503 ``Loading model`` on every route while loading (:meth:`FakeLlamaServer.set_loading`);
- errors as ``{"error": {"code", "message", "type"}}`` with the status equal to the code;
- a slot per generation; when all slots are busy a request waits in a FIFO and, when
  streaming, gets no status line or headers until a slot takes it;
- streams of ``data: {json}`` frames, one per token, ending with a ``stop: true`` frame that
  carries the final object (``timings``, ``tokens_predicted``, ...); no ``[DONE]``;
- a client that closes its connection stops its generation at once and frees its slot;
- ``id_slot`` waits for that slot; each slot keeps the tokens of its last prompt and
  output, and with ``cache_prompt`` a request reuses their common prefix (``timings.cache_n``);
  ``POST /slots/N?action=erase`` empties a slot's cache (501 with ``slot_actions`` off, as
  without ``--slot-save-path``).

Generation is deterministic: token ``i`` for a prompt and seed is one of a fixed list of
words picked by sha256(prompt, seed, i), returned as the piece ``" " + word``. Tokenization
is one token per whitespace-separated word (plus BOS ``1`` with ``add_special``), and the
token id of a word is the same in ``/tokenize`` and in stream frames.

Directives written anywhere in the prompt provoke faults through the real API (they count
as words when tokenizing, like any other text):

``[[error-before:STATUS]]``  a JSON error instead of a response: 400 ``invalid_request_error``,
                             500 ``server_error``, 503 ``unavailable_error`` (no slot available)
``[[error-mid:N]]``          after N tokens, a ``data: {"error": ...}`` frame (500, "Context
                             size has been exceeded."), then the body ends; without
                             ``stream`` a 500 JSON error
``[[drop:N]]``               after N tokens the connection is cut with no final frame
``[[hang:N]]``               after N tokens, nothing more until the client goes away
``[[empty:K]]``              every K-th piece is ``""`` (text held back while a stop string
                             may be forming); such frames still count in ``tokens_predicted``
``[[call:NAME]]``            (chat, in the last user message, with ``tools`` offering NAME)
                             answer with a call of NAME instead of text

In an embeddings ``input``, ``[[error-before:STATUS]]`` acts as above and ``[[hang:N]]``
(any N) holds the slot with no answer until the client goes away.

Run it alone with ``python -m orchestra.testing.fake_llama --port 8081 --slots 2``
(``--embeddings`` to serve embeddings).

What is where:

- :mod:`.words`: the vocabulary, the tokenizer and the deterministic generated words;
- :mod:`.asgi`: the raw ASGI plumbing (message types, JSON and error bodies, responses);
- :mod:`.completion`: a ``/completion`` body validated into a job, its directives, its
  final object and the messages that end its response; the :class:`~.completion.Face`
  through which each endpoint writes its tokens;
- :mod:`.template`: the chat template, rendering ``messages`` into a prompt;
- :mod:`.chat`: a ``/v1/chat/completions`` body turned into a job and its text answer;
- :mod:`.text`: a ``/v1/completions`` body turned into a job and its text answer;
- :mod:`.oai`: the OpenAI-shaped objects and stream chunks the chat answers share;
- :mod:`.toolcall`: when the chat answer is a tool call, and how it is streamed;
- :mod:`.embeddings`: a ``/v1/embeddings`` body turned into prompts, their vectors, the answer;
- :mod:`.slots`: the slots and the FIFO of requests waiting for one;
- :mod:`.server`: :class:`FakeLlamaServer`, its knobs, counters, routes and generation;
- :mod:`.cli` (and :mod:`.__main__`): the command line.

This package imports nothing of the rest of orchestra.
"""

from .asgi import Message, Receive, Scope, Send, error_body
from .cli import main
from .completion import DEFAULT_N_PREDICT
from .embeddings import EMBEDDING_DIM, embedding
from .server import FakeLlamaServer
from .words import BOS_TOKEN, WORDS, generated_word, token_id, tokenize

__all__ = [
    "BOS_TOKEN",
    "DEFAULT_N_PREDICT",
    "EMBEDDING_DIM",
    "WORDS",
    "FakeLlamaServer",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "embedding",
    "error_body",
    "generated_word",
    "main",
    "token_id",
    "tokenize",
]
