"""Outbound HTTP that cannot be turned against our own network (SSRF).

Every fetch the assistant makes goes through ``fetch``: the URL must be http(s); its host is resolved
once and every address must be public (not loopback, private, link-local — cloud metadata included —
unspecified, multicast, reserved, CGNAT, or an IPv6 form embedding one of those) unless the operator
allow-listed the host, IP or network in ``FETCH_ALLOWLIST``. The connection then goes to the address
that was checked (the hostname is kept for the Host header and TLS), so a second DNS answer cannot
swap in an internal address. Redirects are followed by hand and every hop is checked again. Size and
total time are bounded.
"""
from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

import httpx

from shared.config import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_REDIRECTS = 5
REDIRECT_CODES = (301, 302, 303, 307, 308)
DEFAULT_PORTS = {"http": 80, "https": 443}
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
USER_AGENT = "ThreadlineFetcher/1.0 (+https://github.com/threadline)"


class FetchError(Exception):
    """The fetch failed; the message is safe to show to the model and the user."""


class Blocked(FetchError):
    """The URL points somewhere the guard refuses to go."""


# --- address policy --------------------------------------------------------------------------------

def blocked_reason(ip: IPAddress) -> str | None:
    """Why this address must not be reached, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or (ip.sixtofour) or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            reason = blocked_reason(embedded)
            return f"{reason} (embedded in an IPv6 address)" if reason else None
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.version == 4 and ip in CGNAT, "a shared (CGNAT) address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
    )
    return next((why for failed, why in checks if failed), None)


@dataclass(frozen=True)
class AllowEntry:
    """One FETCH_ALLOWLIST entry: a hostname or an IP network, optionally limited to one port."""

    host: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    def matches(self, host: str, port: int, ip: IPAddress | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == host
        return ip is not None and self.network is not None and ip.version == self.network.version and ip in self.network


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"FETCH_ALLOWLIST entry {entry!r}: bad port")
    return int(text)


def parse_allow_entry(entry: str) -> AllowEntry:
    """``host``, ``host:port``, ``1.2.3.4``, ``1.2.3.4:80``, ``10.0.0.0/8``, ``::1``, ``[::1]:8080``."""
    text = entry.strip()
    try:
        return AllowEntry(network=ipaddress.ip_network(text, strict=False))
    except ValueError:
        pass
    port = None
    if text.startswith("["):
        inside, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"FETCH_ALLOWLIST entry {entry!r}: expected [address]:port")
            port = _port(rest[1:], entry)
        return AllowEntry(network=ipaddress.ip_network(inside), port=port)
    if text.count(":") == 1:
        text, port_text = text.split(":")
        port = _port(port_text, entry)
    try:
        return AllowEntry(network=ipaddress.ip_network(text, strict=False), port=port)
    except ValueError:
        if not text or "/" in text:
            raise ValueError(f"FETCH_ALLOWLIST entry {entry!r}: not a host, IP or network") from None
        return AllowEntry(host=text.lower().rstrip("."), port=port)


@lru_cache(maxsize=8)
def parse_allowlist(entries: tuple[str, ...]) -> tuple[AllowEntry, ...]:
    return tuple(parse_allow_entry(e) for e in entries if e.strip())


def allowlist() -> tuple[AllowEntry, ...]:
    return parse_allowlist(tuple(settings.fetch_allowlist))


def is_allowed(host: str, port: int, ip: IPAddress | None, entries: Iterable[AllowEntry] | None = None) -> bool:
    entries = allowlist() if entries is None else entries
    return any(e.matches(host.lower().rstrip("."), port, ip) for e in entries)


# --- URL checks ----------------------------------------------------------------------------------

def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to (unit tests replace this; integration tests never do)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, IPAddress] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone id
        seen.setdefault(address, ipaddress.ip_address(address))
    return list(seen.values())


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to."""

    url: httpx.URL
    host: str
    port: int
    ip: IPAddress

    @property
    def pinned_url(self) -> httpx.URL:
        return self.url.copy_with(host=str(self.ip))

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.url.port is None else f"{host}:{self.port}"


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def check_url(url: str | httpx.URL) -> Target:
    """Parse, resolve and check a URL; raise Blocked unless every address it resolves to may be reached."""
    try:
        parsed = httpx.URL(url) if isinstance(url, str) else url
    except (httpx.InvalidURL, TypeError, ValueError):
        raise Blocked("that is not a valid URL") from None
    if parsed.scheme not in DEFAULT_PORTS:
        raise Blocked("only http and https URLs can be fetched")
    if not parsed.host:
        raise Blocked("the URL has no host")
    if parsed.userinfo:
        raise Blocked("URLs with credentials are not fetched")
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")  # IDNA-encoded, as DNS and Host see it
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    # A host name that does not resolve and one that resolves to an internal address get the same
    # answer, so the tool cannot be used to probe which internal names exist. An IP literal names its
    # address itself: its answer may say what kind of address it is.
    literal = _is_ip_literal(host)
    not_public = f"refusing to fetch {host}: it does not resolve to a public address"
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError, ValueError):
        raise Blocked(not_public) from None
    if not addresses:
        raise Blocked(not_public)
    host_allowed = is_allowed(host, port, None)
    for ip in addresses:
        if host_allowed or is_allowed(host, port, ip):
            continue
        reason = blocked_reason(ip)
        if reason:
            raise Blocked(f"refusing to fetch {host}: it resolves to {reason}" if literal else not_public)
    return Target(url=parsed, host=host, port=port, ip=addresses[0])


# --- fetching ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fetched:
    url: str
    status: int
    headers: httpx.Headers
    content: bytes
    truncated: bool
    encoding: str | None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def text(self) -> str:
        return self.content.decode(self.encoding or "utf-8", errors="replace")


def _read_limited(response: httpx.Response, max_bytes: int, deadline: float) -> tuple[bytes, bool]:
    chunks, size = [], 0
    for chunk in response.iter_raw(chunk_size=65536):
        if time.monotonic() > deadline:
            raise FetchError("the page took too long to download")
        chunks.append(chunk)
        size += len(chunk)
        if size >= max_bytes:
            return b"".join(chunks)[:max_bytes], True
    return b"".join(chunks), False


def _decoded(response: httpx.Response, raw: bytes, truncated: bool) -> bytes:
    """Undo Content-Encoding (gzip, br …) on what was read, still bounded by the byte limit."""
    if not response.headers.get("content-encoding"):
        return raw
    import zlib

    encoding = response.headers["content-encoding"].strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        decompressor = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
        try:
            return decompressor.decompress(raw, settings.fetch_max_bytes)
        except zlib.error:
            if truncated:
                return b""
            raise FetchError("the page's compressed body is corrupt") from None
    if encoding == "identity":
        return raw
    raise FetchError(f"the page uses an unsupported content encoding ({encoding})")


def fetch(url: str, *, headers: dict[str, str] | None = None, timeout: float | None = None,
          max_bytes: int | None = None, max_redirects: int = MAX_REDIRECTS) -> Fetched:
    """GET a URL through the guard: checked address, manual redirects, bounded size and total time."""
    timeout = settings.fetch_timeout if timeout is None else timeout
    max_bytes = settings.fetch_max_bytes if max_bytes is None else max_bytes
    deadline = time.monotonic() + timeout
    request_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate", **(headers or {})}
    current: str | httpx.URL = url
    for _hop in range(max_redirects + 1):
        target = check_url(current)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("the page took too long to answer")
        try:
            with httpx.Client(trust_env=False, follow_redirects=False, timeout=remaining) as client:
                with client.stream(
                    "GET", target.pinned_url, headers={**request_headers, "Host": target.host_header},
                    extensions={"sni_hostname": target.host},
                ) as response:
                    location = response.headers.get("location")
                    if response.status_code in REDIRECT_CODES and location:
                        current = target.url.join(location)
                        continue
                    raw, truncated = _read_limited(response, max_bytes, deadline)
                    return Fetched(
                        url=str(target.url), status=response.status_code, headers=response.headers,
                        content=_decoded(response, raw, truncated), truncated=truncated,
                        encoding=response.charset_encoding,
                    )
        except httpx.TimeoutException:
            raise FetchError("the page took too long to answer") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"could not fetch the page ({type(exc).__name__})") from None
    raise FetchError(f"too many redirects (more than {max_redirects})")
