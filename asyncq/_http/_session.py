"""The queue's HTTP client: aiohttp sessions whose every connection goes through
the address guard. aiohttp is imported here, when the first delivery runs.

The guard sits at two places, both on addresses that are connected to, never on
a separate lookup: the resolver hands aiohttp only allowed addresses (so a DNS
answer that changes between a check and the connect cannot slip through: there
is no separate check), and every socket is checked again before it connects (a
host written as an address skips the resolver).

One session (one connection pool) serves every destination of a queue that
shares an address policy: most queues have one. A destination with its own
policy (`allow_private`, `allow=`, its own resolver) gets its own pool, so that
a connection opened under a looser policy is never reused under a stricter one.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING, Any

from ._config import Http
from ._errors import AddressRefused, HttpExtraMissing
from ._ssrf import AddressPolicy

if TYPE_CHECKING:
    import aiohttp
    from aiohttp.abc import AbstractResolver, ResolveResult


_aiohttp: Any = None


def import_aiohttp() -> Any:
    """aiohttp, or `HttpExtraMissing` naming the extra to install."""
    global _aiohttp
    if _aiohttp is None:
        try:
            import aiohttp
        except ImportError:
            raise HttpExtraMissing() from None
        _aiohttp = aiohttp
    return _aiohttp


class Client:
    """What deliveries under one `Http` use: its session and its timeout."""

    __slots__ = ("http", "session", "timeout")

    def __init__(self, http: Http, session: aiohttp.ClientSession, timeout: Any) -> None:
        self.http = http  # held, so that its id() is not reused while this lives
        self.session = session
        self.timeout = timeout


class GuardRefused(OSError):
    """The guard refused an address, raised where aiohttp expects an `OSError`
    (it wraps it, and the delivery unwraps `refused`)."""

    def __init__(self, refused: AddressRefused) -> None:
        super().__init__(str(refused))
        self.refused = refused


def refused_in(error: BaseException) -> AddressRefused | None:
    """The guard's refusal inside an error aiohttp raised, if that is what it is."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, GuardRefused):
            return current.refused
        inner = getattr(current, "os_error", None)
        if isinstance(inner, GuardRefused):
            return inner.refused
        current = current.__cause__ or current.__context__
    return None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text.split("%", 1)[0])


def _guarded_resolver(policy: AddressPolicy, inner: AbstractResolver, owned: bool) -> Any:
    from aiohttp.abc import AbstractResolver

    class GuardedResolver(AbstractResolver):
        """Resolves with `inner`, and answers only the addresses the policy allows."""

        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            answers = await inner.resolve(host, port, family)
            allowed = []
            refusal: AddressRefused | None = None
            for answer in answers:
                why = policy.refusal(_address(answer["host"]))
                if why is None:
                    allowed.append(answer)
                elif refusal is None:
                    refusal = AddressRefused(host, answer["host"], why)
            if not allowed:
                if refusal is None:
                    raise OSError(f"{host!r} resolved to no address")
                raise GuardRefused(refusal)
            return allowed

        async def close(self) -> None:
            if owned:
                await inner.close()

    return GuardedResolver()


def _guarded_socket(policy: AddressPolicy) -> Any:
    def open_socket(addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        host = str(sockaddr[0])
        why = policy.refusal(_address(host))
        if why is not None:
            raise GuardRefused(AddressRefused(host, host, why))
        return socket.socket(family, type_, proto)

    return open_socket


class HttpClients:
    """The sessions of one queue's run, by address policy; opened when a delivery
    first needs one, closed when the queue stops."""

    def __init__(self) -> None:
        self._sessions: dict[tuple[object, ...], aiohttp.ClientSession] = {}
        self._resolvers: list[AbstractResolver] = []  # aiohttp closes only its own
        self._clients: dict[int, Client] = {}  # by id(Http): one lookup per delivery

    def client(self, http: Http) -> Client:
        """The session and timeout for deliveries under `http`."""
        client = self._clients.get(id(http))
        if client is None or client.session.closed:
            # sock_connect, not connect: a timer only when a connection is made, not
            # one per request for taking a pooled connection (measured: a few us each).
            timeout = import_aiohttp().ClientTimeout(
                total=http.timeout, sock_connect=http.connect_timeout
            )
            client = self._clients[id(http)] = Client(http, self.session(http), timeout)
        return client

    def session(self, http: Http) -> aiohttp.ClientSession:
        key = (http.addresses, id(http.resolver), http.dns_cache)
        session = self._sessions.get(key)
        if session is None or session.closed:
            session = self._sessions[key] = self._open(http)
        return session

    def _open(self, http: Http) -> aiohttp.ClientSession:
        from .. import __version__

        client = import_aiohttp()
        inner = http.resolver if http.resolver is not None else client.DefaultResolver()
        resolver = _guarded_resolver(http.addresses, inner, owned=http.resolver is None)
        self._resolvers.append(resolver)
        connector = client.TCPConnector(
            limit=0,  # the queue's workers bound the calls in flight
            resolver=resolver,
            use_dns_cache=http.dns_cache > 0,
            ttl_dns_cache=http.dns_cache or None,
            socket_factory=_guarded_socket(http.addresses),
        )
        session: aiohttp.ClientSession = client.ClientSession(
            connector=connector,
            # No proxy from the environment (it would connect for us, past the
            # guard), and no cookies carried from one delivery to the next.
            trust_env=False,
            cookie_jar=client.DummyCookieJar(),
            headers={"User-Agent": f"asyncq/{__version__}"},
        )
        return session

    async def close(self) -> None:
        sessions = list(self._sessions.values())
        resolvers, self._resolvers = self._resolvers, []
        self._sessions.clear()
        self._clients.clear()
        for session in sessions:
            await session.close()
        for resolver in resolvers:
            await resolver.close()
