"""``orchestra chat`` as a real child process against a live server (the fake engine).

The REPL reads one turn per line; from a pipe it shows no prompt. The turn that must stay
in progress until Ctrl-C uses the fake's ``[[hang:2]]`` (two tokens, then nothing until
the client goes away), and the test waits for the server to show it running before it
sends SIGINT, so nothing depends on timing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from orchestra.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_REFUSED

from .engine import free_port
from .harness import Stack, open_stack
from .test_cli_client import ORCHESTRA, Child, _env, _pump, cli

ONE_SLOT = {"shutdown_grace_s": 0.0, "adapter": {"engine_backlog": 0}}


@attrs.define
class ChatChild(Child):
    terminal: int = -1
    """The master end of the child's stdin, when that is a pseudo-terminal."""


async def v1_text(stack: Stack, task_id: str) -> str:
    return "".join(e.data["t"] for e in await stack.stream(task_id) if e.event == "token")


@asynccontextmanager
async def chat_child(*args: str, url: str, tty_stdin: bool = False) -> AsyncIterator[ChatChild]:
    """``orchestra chat ARGS --url URL`` with stdin a pipe (``child.process.stdin``), or a
    pseudo-terminal whose master end is ``child.terminal`` when ``tty_stdin``."""
    master = slave = -1
    if tty_stdin:
        master, slave = os.openpty()
    process = await trio.lowlevel.open_process(
        [*ORCHESTRA, "chat", *args, "--url", url],
        stdin=slave if tty_stdin else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    if tty_stdin:
        os.close(slave)
    child = ChatChild(process, terminal=master)
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None and process.stderr is not None
            nursery.start_soon(_pump, child, "out", process.stdout)
            nursery.start_soon(_pump, child, "err", process.stderr)
            yield child
            with trio.fail_after(30):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        if master >= 0:
            os.close(master)


async def say(child: Child, text: str) -> None:
    assert child.process.stdin is not None
    await child.process.stdin.send_all(text.encode())


async def test_a_scripted_session_prints_each_answer_and_keeps_the_conversation() -> None:
    async with open_stack() as stack:
        url = stack.running.urls[0]
        lines = "hello there\n\nand then?\n"
        human = await cli(
            "chat", "--system", "Be brief.", "--max-tokens", "3", "--seed", "4",
            "--temperature", "0.7", url=url, stdin=lines.encode(),
        )  # fmt: skip
        sent = stack.fake.chat_bodies[-1]
        as_json = await cli("chat", "--json", "--max-tokens", "2", url=url, stdin=b"hi\n")
        answer = json.loads(as_json.stdout)
        served = await v1_text(stack, answer["task_id"])
    assert human.returncode == EXIT_OK, human
    assert human.stderr == ""  # no prompt from a pipe, nothing else
    first, second = human.stdout.splitlines()
    assert len(first.split()) == 3 and len(second.split()) == 3
    history = sent["messages"]
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user"]
    assert history[0]["content"] == "Be brief." and history[1]["content"] == "hello there"
    assert history[2]["content"] == first and history[3]["content"] == "and then?"
    assert sent["seed"] == 4 and sent["temperature"] == 0.7
    assert as_json.returncode == EXIT_OK, as_json
    assert answer["text"] == served and answer["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 2


async def test_no_server_exits_4_and_a_refusal_exits_3() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    unreachable = await cli("chat", url=url, stdin=b"hello\n")
    assert unreachable.returncode == EXIT_FAILED, unreachable
    assert unreachable.stderr.startswith(f"orchestra: TRANSPORT_ERROR: no answer from {url}")
    assert unreachable.stdout == ""
    async with open_stack(auth={"token": "chat-token", "optional": False}) as stack:
        url = stack.running.urls[0]
        refused = await cli("chat", url=url, stdin=b"hello\n")
        invalid = await cli(
            "chat", "--temperature", "9", url=url, stdin=b"hello\n",
            env=_env(ORCHESTRA_TOKEN="chat-token"),
        )  # fmt: skip
    assert refused.returncode == EXIT_REFUSED, refused
    assert refused.stderr.startswith("orchestra: UNAUTHORIZED: ")
    assert invalid.returncode == EXIT_REFUSED, invalid
    assert invalid.stderr.startswith("orchestra: INVALID_PARAMS: temperature")


async def test_ctrl_c_mid_answer_cancels_the_turn_on_the_server_and_goes_on() -> None:
    async with open_stack(**ONE_SLOT) as stack:
        queue = stack.running.actors.queue
        async with chat_child("--max-tokens", "40", url=stack.running.urls[0]) as child:
            await say(child, "[[hang:2]] keep talking\n")
            with trio.fail_after(30):
                await stack.fake.wait_until(lambda: stack.fake.busy_slots == 1)
            await child.until(lambda c: len(c.stdout.split()) == 2)  # both tokens printed
            assert queue.statistics().slots_busy == 1  # the turn runs on the server
            child.process.send_signal(signal.SIGINT)
            await child.until(lambda c: c.stderr.endswith("\n"))
            [said] = child.stderr.splitlines()
            assert re.fullmatch(r"cancelled task [0-9a-f]{32}", said), said
            running = said.rpartition(" ")[2]
            assert await stack.wait_state(running, "cancelled")
            with trio.fail_after(10):
                await stack.fake.wait_until(lambda: stack.fake.busy_slots == 0)
            # back at the prompt: the next turn is answered, without the cancelled one
            await say(child, "what now?\n")
            await child.until(lambda c: c.stdout.count("\n") == 2)
            assert child.process.stdin is not None
            await child.process.stdin.aclose()  # the end of the input ends the session
            assert await child.wait() == EXIT_OK
        state = (await stack.client.get(f"/v1/tasks/{running}")).json()["state"]
        history = stack.fake.chat_bodies[-1]["messages"]
    assert state == "cancelled" and queue.statistics().ended.get("cancelled") == 1
    assert history == [{"role": "user", "content": "what now?"}]
    cut, answer = child.stdout.splitlines()
    assert len(cut.split()) == 2 and answer.strip()


async def test_on_a_terminal_it_prompts_and_ctrl_c_at_the_prompt_exits_0() -> None:
    async with (
        open_stack() as stack,
        chat_child("--max-tokens", "2", url=stack.running.urls[0], tty_stdin=True) as child,
    ):
        await child.until(lambda c: c.stderr == "> ")
        os.write(child.terminal, b"hello\n")
        await child.until(lambda c: c.stderr == "> > ")  # answered; prompting again
        child.process.send_signal(signal.SIGINT)
        assert await child.wait() == EXIT_OK
    assert len(child.stdout.splitlines()) == 1 and len(child.stdout.split()) == 2
    assert child.stderr == "> > \n"
