"""What any process pays on this machine to pass a streamed token on: the floor under
orchestra's CPU per token (issue 18).

Each figure is the CPU time of this process (``/proc/self/schedstat``: nanoseconds on the
CPU, utime + stime at a finer grain) per operation, medians over ``--repeats`` runs:

- ``sleep``: one blocking wait and its wake-up (``time.sleep(0.01)``): the cost of going
  idle and coming back, which a process at the engine's pace pays per token or per batch;
- ``send_wakes_peer``: a 60-byte ``send`` to a process blocked in ``recv`` (after the same
  sleep, minus it): what handing a token to a waiting client costs the sender;
- ``relay_plain``: the least a relay can do, in plain Python (one ``epoll`` loop, no
  parsing): read the fake llama-server's streams (``--streams`` at once, ``--delay-ms``
  per token) and write every byte read to a client process that reads it all;
- ``relay_trio``: the same relay on Trio (``wait_readable`` + ``recv``, ``send``), the
  floor for any Trio service before it parses or encodes anything.

Per token, orchestra does what ``relay_trio`` does, plus parsing the engine's frame, the
event log, the SSE encoding and the ASGI/HTTP layers of Quart and Hypercorn.

Usage: .venv/bin/python bench/floor.py [--streams 2] [--tokens 256] [--delay-ms 10]
           [--repeats 3] [--out PREFIX]
Writes proof-bundle/bench/issue18-floor.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "proof-bundle" / "bench" / "issue18-floor"


def on_cpu() -> float:
    """Seconds this process has been on a CPU."""
    return int(Path("/proc/self/schedstat").read_text().split()[0]) / 1e9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sleeps(n: int) -> float:
    start = on_cpu()
    for _ in range(n):
        time.sleep(0.01)
    return (on_cpu() - start) / n


def reader_process() -> tuple[socket.socket, int]:
    """A socket whose other end a child process reads until it closes; the child's pid."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the client: read everything, then leave
        ours.close()
        while theirs.recv(65536):
            pass
        os._exit(0)
    theirs.close()
    return ours, pid


def sends_waking_a_peer(n: int) -> float:
    ours, pid = reader_process()
    start = on_cpu()
    for _ in range(n):
        time.sleep(0.01)
        ours.send(b"x" * 60)
    spent = (on_cpu() - start) / n
    ours.close()
    os.waitpid(pid, 0)
    return spent


def engine_request(port: int, k: int, tokens: int) -> socket.socket:
    body = json.dumps({"prompt": f"floor {k}", "n_predict": tokens, "stream": True, "seed": k})
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()
    )
    sock.setblocking(False)
    return sock


def relay_plain(port: int, streams: int, tokens: int) -> float:
    client, pid = reader_process()
    socks = {s.fileno(): s for s in (engine_request(port, k, tokens) for k in range(streams))}
    poller = select.epoll()
    for fd in socks:
        poller.register(fd, select.EPOLLIN)
    frames, start = 0, on_cpu()
    while socks:
        for fd, _ in poller.poll():
            data = socks[fd].recv(65536)
            if not data:
                poller.unregister(fd)
                socks.pop(fd).close()
                continue
            frames += data.count(b"data: ")
            client.sendall(data)
    spent = (on_cpu() - start) / frames
    client.close()
    os.waitpid(pid, 0)
    return spent


def relay_trio(port: int, streams: int, tokens: int) -> float:
    client, pid = reader_process()
    client.setblocking(False)
    frames = 0

    async def one(sock: socket.socket) -> None:
        nonlocal frames
        while True:
            await trio.lowlevel.wait_readable(sock)
            data = sock.recv(65536)
            if not data:
                sock.close()
                return
            frames += data.count(b"data: ")
            client.send(data)  # 60-200 bytes to a reader that keeps up: never blocks

    async def main() -> float:
        socks = [engine_request(port, k, tokens) for k in range(streams)]
        start = on_cpu()
        async with trio.open_nursery() as nursery:
            for sock in socks:
                nursery.start_soon(one, sock)
        return (on_cpu() - start) / frames

    spent = trio.run(main)
    client.close()
    os.waitpid(pid, 0)
    return spent


def median_us(measure: Callable[[], float], repeats: int) -> dict[str, Any]:
    runs = [measure() * 1e6 for _ in range(repeats)]
    return {"median_us": round(statistics.median(runs), 1), "runs_us": [round(r, 1) for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--delay-ms", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    port = free_port()
    engine = subprocess.Popen(
        [sys.executable, "-m", "orchestra.testing.fake_llama", "--port", str(port),
         "--slots", str(args.streams), "--token-delay-ms", str(args.delay_ms)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:  # wait for the fake's health, not a fixed time
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
        sleep = median_us(lambda: sleeps(300), args.repeats)
        send = median_us(lambda: sends_waking_a_peer(300), args.repeats)
        send["minus_sleep_us"] = round(send["median_us"] - sleep["median_us"], 1)
        plain = median_us(lambda: relay_plain(port, args.streams, args.tokens), args.repeats)
        on_trio = median_us(lambda: relay_trio(port, args.streams, args.tokens), args.repeats)
    finally:
        engine.terminate()
        engine.wait(timeout=30)
    results = {
        "sleep": sleep,
        "send_wakes_peer": send,
        "relay_plain_per_token": plain,
        "relay_trio_per_token": on_trio,
        "setup": {
            "engine": f"fake llama-server, {args.streams} slots, {args.delay_ms} ms per token, "
            f"{args.tokens} tokens per stream, {args.streams} streams at once",
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
            f"Python {platform.python_version()}",
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "command": ".venv/bin/python bench/floor.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(results, indent=2) + "\n")
    Path(f"{out}.md").write_text(
        "# The floor under a relay's CPU per token on this machine\n\n"
        f"{results['setup']['engine']}; {results['setup']['machine']}; "
        f"{results['setup']['date']}; load {results['setup']['load_average']}.\n"
        f"Command: `{results['setup']['command']}`\n\n"
        "CPU time of the measuring process (`/proc/self/schedstat`), median of "
        f"{args.repeats} runs:\n\n| operation | µs of CPU |\n|---|---|\n"
        f"| a blocking wait and its wake-up (`time.sleep(0.01)`) | {sleep['median_us']} |\n"
        f"| a 60-byte send to a process blocked in `recv`, beyond the sleep | "
        f"{send['minus_sleep_us']} |\n"
        f"| relay, plain Python epoll loop, per token | {plain['median_us']} |\n"
        f"| relay on Trio (`wait_readable`, `recv`, `send`), per token | "
        f"{on_trio['median_us']} |\n"
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
