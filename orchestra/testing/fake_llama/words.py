"""The fake engine's deterministic vocabulary: its tokenizer and the words it generates.

Tokenization is one token per whitespace-separated word (plus BOS ``1`` with
``add_special``), and the token id of a word is the same in ``/tokenize`` and in stream
frames. Token ``i`` generated for a prompt and seed is one of :data:`WORDS`, picked by
sha256(prompt, seed, i).
"""

from __future__ import annotations

import hashlib
import json
from typing import Final

BOS_TOKEN: Final = 1
"""The token id ``/tokenize`` puts first when ``add_special`` is true."""

# fmt: off
WORDS: Final = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
    "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "amber",
    "basil", "cedar", "dune", "ember", "fern", "grove", "heron", "iris", "jade", "kelp",
    "lotus", "maple", "nectar", "olive", "pine", "quartz", "reed", "sage", "thyme", "umber",
    "vine", "willow", "yarrow",
)
"""The vocabulary generated text is drawn from."""
# fmt: on


def token_id(word: str) -> int:
    """The fake vocabulary's id for one whitespace-free word (always >= 2)."""
    return 2 + int.from_bytes(hashlib.sha256(word.encode()).digest()[:3], "big")


def tokenize(text: str, add_special: bool = False) -> list[int]:
    """Token ids of ``text`` as the fake's ``/tokenize`` returns them."""
    ids = [token_id(word) for word in text.split()]
    return [BOS_TOKEN, *ids] if add_special else ids


def generated_word(prompt: str, seed: object, index: int) -> str:
    """The word generated as token ``index`` for ``prompt`` and ``seed`` (deterministic)."""
    key = json.dumps([prompt, seed, index], sort_keys=True).encode()
    return WORDS[int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % len(WORDS)]
