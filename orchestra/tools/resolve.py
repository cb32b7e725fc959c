"""Host names to addresses, once per hop: the :class:`Resolver` the fetcher asks.

A fetch resolves a name once, checks every address it got, and connects to a checked
address (never to the name), so an answer that changes between the check and the
connection (DNS rebinding) cannot take it elsewhere. Tests pass a stub resolver; the
service uses :class:`SystemResolver`.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Protocol

import trio


class Resolver(Protocol):
    """What the fetcher needs from name resolution."""

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        """The addresses of ``host`` (an ASCII domain name), in the order to try them.

        Raises OSError when it has none (``socket.gaierror`` for an unknown name). Under
        cancellation, raises :exc:`trio.Cancelled` and leaves nothing behind."""
        ...


class SystemResolver:
    """The system's resolver (``getaddrinfo``, in a worker thread through
    :func:`trio.socket.getaddrinfo`, which a cancellation abandons at once)."""

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found: list[str] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = str(sockaddr[0])
            if address not in found:
                found.append(address)
        if not found:
            raise OSError(f"{host} has no address")
        return found
