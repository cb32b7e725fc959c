"""A steady streaming load to profile orchestra under (``py-spy record -p PID``), and its CPU.

N clients each stream tasks of ``max_tokens`` tokens back to back through one orchestra
(``POST /v1/tasks`` with ``Accept: text/event-stream``) for D seconds; prints the tokens,
tokens/s and orchestra's CPU (``/proc/PID/stat``, utime + stime) per task and per 1,000
tokens over that time.

Usage: .venv/bin/python bench/profile_load.py N SECONDS ORCHESTRA_PID [URL] [MAX_TOKENS]
e.g. with orchestra on 127.0.0.1:18080:
    .venv/bin/python bench/profile_load.py 8 26 $PID &
    .venv/bin/py-spy record -p $PID -d 20 -r 500 --gil --nonblocking -f raw -o prof.raw
"""

from __future__ import annotations

import os
import sys
import time

import httpx
import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procstat import cpu_seconds  # the sibling bench module (run as a script)


async def main(clients: int, seconds: float, pid: int, url: str, max_tokens: int) -> None:
    tokens = 0
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        end = trio.current_time() + seconds

        async def one(k: int) -> None:
            nonlocal tokens
            i = 0
            while trio.current_time() < end:
                i += 1
                body = {"prompt": f"Story {k}-{i}-{time.time()}: once upon a time",
                        "max_tokens": max_tokens, "temperature": 0, "seed": i}  # fmt: skip
                headers = {"Accept": "text/event-stream"}
                async with client.stream("POST", "/v1/tasks", json=body, headers=headers) as r:
                    async for line in r.aiter_lines():
                        tokens += line == "event: token"

        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        async with trio.open_nursery() as nursery:
            for k in range(clients):
                nursery.start_soon(one, k)
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
    tasks = tokens / max_tokens
    print(
        f"tasks~={tasks:.0f} cpu_ms_per_task={1e3 * (cpu1 - cpu0) / tasks:.2f} tokens={tokens} "
        f"tok/s={tokens / (t1 - t0):.1f} cpu_ms_per_1k={1e6 * (cpu1 - cpu0) / tokens:.0f}"
    )


if __name__ == "__main__":
    argv = sys.argv[1:]
    trio.run(
        main,
        int(argv[0]),
        float(argv[1]),
        int(argv[2]),
        argv[3] if len(argv) > 3 else "http://127.0.0.1:18080",
        int(argv[4]) if len(argv) > 4 else 32,
    )
