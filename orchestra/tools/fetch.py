"""``http_fetch``'s network side: one call, hop by hop, behind the policy.

For the call and then for each redirect (``follow_redirects`` is off: redirects are
followed here, by hand), :class:`Fetcher` does, in order:

1. parse the URL and check the request (:func:`~orchestra.tools.policy.check_request`);
2. ask the policy hook, if any (:func:`~orchestra.tools.hook.consult`); a rewritten call
   is checked again from step 1;
3. resolve the host once (the :class:`~orchestra.tools.resolve.Resolver`; an address is
   its own answer) and check every address it resolved to
   (:func:`~orchestra.tools.policy.check_addresses`): a refused address is refused before
   any connection is made;
4. connect to a checked address (never to the name, so a second, different DNS answer
   cannot matter: no DNS rebinding), in the order the resolver gave, the next one only
   when connecting failed; over https the TLS handshake still names the host (SNI, through
   httpcore's ``sni_hostname`` request extension) and the certificate is checked against
   the host; the request's ``Host`` header is the URL's. Each hop gets a connection of
   its own (no pool: a connection made for one name is never reused for another);
5. a redirect (301, 302, 303, 307, 308 with a ``Location``) goes back to step 1 for its
   URL, up to ``max_redirects``; secret headers are not sent on to another origin;
6. otherwise check the answer's content type (``GET``; before reading any of its body) and
   read the body up to the byte limit, then stop reading (``truncated``).

Refusals are :class:`~orchestra.errors.Refusal`: ``FORBIDDEN`` (the policy or the hook;
``policy_label`` names the rule), ``INVALID_PARAMS`` (the agent's URL is not one),
``TOOL_FAILED`` (the name does not resolve, no address accepts a connection, TLS fails,
the answer breaks off or is not HTTP). The time limit is the caller's
(:class:`orchestra.tools.Tools` wraps the whole fetch in one deadline).

Cancellation: a cancelled fetch raises :exc:`trio.Cancelled`; its connection is closed on
the way out (the client's ``async with``), and :class:`Progress` says how far it got.
"""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
from collections.abc import AsyncGenerator
from typing import Final, cast
from urllib.parse import urljoin

import attrs
import httpx
import trio

from orchestra import __version__
from orchestra.errors import ErrorCode, Refusal
from orchestra.tools.addresses import IPAddress, canonical
from orchestra.tools.hook import HOOK_LABEL, Hook, ToolCall, consult
from orchestra.tools.policy import (
    Policy,
    Target,
    check_addresses,
    check_content_type,
    check_request,
    parse_url,
    refuse,
)
from orchestra.tools.redact import Scrubber, Secrets
from orchestra.tools.resolve import Resolver

REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
USER_AGENT: Final = f"orchestra/{__version__} (http_fetch)"
"""The ``User-Agent`` sent when the agent sends none."""


@attrs.define
class Progress:
    """How far a fetch got: what the audit records of one that did not finish."""

    url: str
    method: str
    status: int | None = None
    bytes: int = 0


@attrs.frozen(kw_only=True)
class Fetched:
    """An answer, read (up to the limit), before any redaction."""

    status: int
    headers: tuple[tuple[str, str], ...]
    """Lower-case names, in the order received."""
    body: bytes
    truncated: bool
    final_url: str
    redirects: tuple[str, ...]
    content_type: str | None
    charset: str | None

    def text(self) -> str:
        """The body as text: in its declared charset, else UTF-8; undecodable bytes (and a
        character the limit cut in two) become U+FFFD."""
        try:
            return self.body.decode(self.charset or "utf-8", errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")


@attrs.frozen
class _Redirect:
    location: str


def _reason(exc: BaseException) -> str:
    """What went wrong, from the first exception of the chain that says (httpx's
    ``ConnectError`` may say nothing, its cause the TLS error)."""
    seen: BaseException | None = exc
    while seen is not None:
        if str(seen):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


class Fetcher:
    """``http_fetch`` over the network, behind ``policy`` (see the module docstring)."""

    def __init__(
        self,
        policy: Policy,
        secrets: Secrets,
        resolver: Resolver,
        hook: Hook | None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context`` verifies servers' certificates; None: httpx's default (certifi's
        CA bundle), made on the first https call (it takes tens of milliseconds)."""
        self._policy = policy
        self._secrets = secrets
        self._resolver = resolver
        self._hook = hook
        self._ssl_context = ssl_context

    async def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            made = await trio.to_thread.run_sync(httpx.create_ssl_context)
            self._ssl_context = self._ssl_context or made
        return self._ssl_context

    async def fetch(
        self, call: ToolCall, scrubber: Scrubber, *, max_bytes: int, progress: Progress
    ) -> Fetched:
        """Fetch ``call`` (reading at most ``max_bytes`` of the body), following and
        checking redirects; secret headers a hook adds go into ``scrubber``. Raises
        :class:`Refusal`."""
        redirects: list[str] = []
        while True:
            target = self._checked(call, "redirect" if redirects else "request")
            if self._hook is not None:
                asked = await consult(self._hook, call)
                if asked is not call:
                    self._secrets.add_headers(scrubber, asked.headers)
                    call = asked
                    target = self._checked(call, "hook")
            progress.url, progress.method = target.url, call.method
            addresses = await self._addresses(target)
            check_addresses(self._policy, target, addresses)
            answer = await self._exchange(call, target, addresses, max_bytes, progress)
            if isinstance(answer, Fetched):
                return attrs.evolve(answer, redirects=tuple(redirects))
            if len(redirects) >= self._policy.max_redirects:
                raise refuse(
                    "max_redirects",
                    f"{target.url} redirects again after {len(redirects)} redirect(s); "
                    f"tools.policy.max_redirects is {self._policy.max_redirects}",
                )
            try:
                following = parse_url(urljoin(target.url, answer.location))
            except ValueError as exc:
                raise Refusal(
                    ErrorCode.TOOL_FAILED,
                    f"{target.url} redirected to a URL that cannot be followed: it {exc}",
                ) from None
            headers = dict(call.headers)
            if following.origin != target.origin:
                headers = self._secrets.without_secrets(headers)
            redirects.append(following.url)
            call = attrs.evolve(call, url=following.url, headers=headers, hop=len(redirects))

    def _checked(self, call: ToolCall, source: str) -> Target:
        """The call's URL parsed and its request checked by the policy."""
        try:
            target = parse_url(call.url)
        except ValueError as exc:
            if source == "request":
                problem = f"url: {exc}"
                raise Refusal(
                    ErrorCode.INVALID_PARAMS, problem, problems=(problem,), param="url"
                ) from None
            if source == "hook":
                raise Refusal(
                    ErrorCode.FORBIDDEN,
                    f"the policy hook rewrote the URL to one that cannot be fetched: it {exc}",
                    policy_label=HOOK_LABEL,
                ) from None
            raise Refusal(
                ErrorCode.TOOL_FAILED, f"a redirect to a URL that cannot be followed: it {exc}"
            ) from None
        check_request(self._policy, call.method, target, call.headers)
        return target

    async def _addresses(self, target: Target) -> list[IPAddress]:
        """The addresses to connect to: the host's own, or those it resolves to (once)."""
        own = target.address
        if own is not None:
            return [own]
        try:
            found = await self._resolver.resolve(target.host, target.port)
        except OSError as exc:
            raise Refusal(
                ErrorCode.TOOL_FAILED,
                f"cannot resolve {target.host}: {exc.strerror or exc}",
                retriable=True,
            ) from None
        addresses: list[IPAddress] = []
        for text in found:
            try:
                addresses.append(ipaddress.ip_address(text.split("%", 1)[0]))
            except ValueError:
                raise Refusal(
                    ErrorCode.TOOL_FAILED,
                    f"the resolver answered {text!r} for {target.host}, which is not an address",
                ) from None
        if not addresses:
            raise Refusal(ErrorCode.TOOL_FAILED, f"{target.host} has no address", retriable=True)
        return addresses

    def _client(self, tls: ssl.SSLContext | None) -> httpx.AsyncClient:
        """A client with a connection of its own, no proxy from the environment, no
        redirects, no timeouts (the caller's deadline bounds the call)."""
        transport = httpx.AsyncHTTPTransport(verify=tls or False, retries=0, trust_env=False)
        return httpx.AsyncClient(
            transport=transport,
            trust_env=False,
            follow_redirects=False,
            timeout=None,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )

    async def _exchange(
        self,
        call: ToolCall,
        target: Target,
        addresses: list[IPAddress],
        max_bytes: int,
        progress: Progress,
    ) -> Fetched | _Redirect:
        """Send the request to the first address that takes a connection; its answer."""
        headers = [("Host", target.authority), *call.headers.items()]
        extensions = {}
        if target.scheme == "https" and target.address is None:
            extensions["sni_hostname"] = target.host
        tls = await self._tls() if target.scheme == "https" else None
        failures = []
        for address in addresses:
            connect_to = canonical(address)
            shown = f"[{connect_to}]" if connect_to.version == 6 else str(connect_to)
            try:
                url = httpx.URL(f"{target.scheme}://{shown}:{target.port}{target.target}")
            except httpx.InvalidURL as exc:
                raise Refusal(
                    ErrorCode.TOOL_FAILED, f"cannot send {target.url}: {_reason(exc)}"
                ) from None
            try:
                async with (
                    self._client(tls) as client,
                    client.stream(
                        call.method, url, headers=headers, extensions=extensions
                    ) as response,
                ):
                    return await self._read(call, target, response, max_bytes, progress)
            except httpx.ConnectError as exc:
                failures.append(f"{connect_to}: {_reason(exc)}")
            except httpx.RequestError as exc:
                raise Refusal(
                    ErrorCode.TOOL_FAILED,
                    f"{target.url}: the answer broke off or is not HTTP ({_reason(exc)})",
                    retriable=True,
                ) from None
        raise Refusal(
            ErrorCode.TOOL_FAILED,
            f"cannot connect to {target.authority}: {'; '.join(failures)}",
            retriable=True,
        )

    async def _read(
        self,
        call: ToolCall,
        target: Target,
        response: httpx.Response,
        max_bytes: int,
        progress: Progress,
    ) -> Fetched | _Redirect:
        progress.status = response.status_code
        location = response.headers.get("location")
        if response.status_code in REDIRECT_STATUSES and location:
            return _Redirect(location)
        content_type = response.headers.get("content-type")
        body = bytearray()
        truncated = False
        if call.method != "HEAD":
            check_content_type(self._policy, content_type)
            chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    room = max_bytes - len(body)
                    if len(chunk) > room:
                        body += chunk[:room]
                        truncated = True
                        break
                    body += chunk
                    progress.bytes = len(body)
        progress.bytes = len(body)
        return Fetched(
            status=response.status_code,
            headers=tuple(response.headers.multi_items()),
            body=bytes(body),
            truncated=truncated,
            final_url=target.url,
            redirects=(),
            content_type=content_type,
            charset=response.charset_encoding,
        )
