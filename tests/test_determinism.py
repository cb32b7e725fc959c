"""Determinism smoke on the real engine: the same seed gives the same bytes.

8 fixed seeds at temperature 0.8, each run twice, again after a replica restart (kill -9 of
llama-server), and 4 at a time on 4 slots. Tasks use the default ``determinism: strict``
(``cache_prompt: false``). The per-seed hashes, with the engine version and model digest,
go to ``proof-bundle/determinism/cpu.json``.
"""

from __future__ import annotations

import hashlib
import json
import platform
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from .engine import Owned, open_owned

SEEDS = [1, 2, 3, 42, 1234, 99991, 2**31 - 1, 7]
PARAMS: dict[str, Any] = {
    "prompt": "Once upon a time, in a small village by the sea,",
    "max_tokens": 48,
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.95,
}
PROOF = Path(__file__).resolve().parent.parent / "proof-bundle" / "determinism"


async def run_seed(owned: Owned, seed: int) -> str:
    return await owned.text(**PARAMS, seed=seed)


async def run_together(owned: Owned, seeds: list[int]) -> dict[int, str]:
    results: dict[int, str] = {}

    async def one(seed: int) -> None:
        results[seed] = await run_seed(owned, seed)

    async with trio.open_nursery() as nursery:
        for seed in seeds:
            nursery.start_soon(one, seed)
    return results


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_same_seed_same_bytes_across_runs_restarts_and_slots() -> None:
    async with open_owned(replica={"parallel": 4}) as owned:
        first = {seed: await run_seed(owned, seed) for seed in SEEDS}
        second = {seed: await run_seed(owned, seed) for seed in SEEDS}
        assert second == first
        assert len(set(first.values())) > 1, "different seeds should sample differently"

        old_pid = owned.signal_engine(signal.SIGKILL)
        await owned.wait_ready_again(old_pid)
        after_restart = {seed: await run_seed(owned, seed) for seed in SEEDS}
        assert after_restart == first

        concurrent = await run_together(owned, SEEDS[:4])
        concurrent |= await run_together(owned, SEEDS[4:])
        assert concurrent == first

        health = await owned.health()
    PROOF.mkdir(parents=True, exist_ok=True)
    record = {
        "what": "tests/test_determinism.py: each seed run twice, after a kill -9 restart of "
        "llama-server, and 4 at a time on 4 slots; every run byte-identical",
        "backend": "cpu",
        "machine": f"{platform.machine()} {platform.system()}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "engine_version": health["engine_version"],
        "model_digest": health["model_digest"],
        "replica": {"parallel": 4, "threads": 2, "ctx_size": 2048},
        "params": PARAMS,
        "seeds": {
            str(seed): {"sha256": sha256(text), "chars": len(text), "identical_runs": 4}
            for seed, text in first.items()
        },
    }
    (PROOF / "cpu.json").write_text(json.dumps(record, indent=2) + "\n")
