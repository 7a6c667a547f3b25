"""The SSRF guard: which addresses are refused, the allow-list, pinning, redirects, size and time limits.

Resolution is replaced with a fake only here (unit tests); the local servers are real sockets.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import time

import pytest

from shared import netguard
from tests.local_http import LocalServer, html, redirect

BLOCKED = [
    "127.0.0.1", "127.1.2.3", "::1", "10.0.0.1", "172.16.5.4", "172.31.255.255", "192.168.1.1",
    "169.254.169.254", "100.64.0.1", "100.127.255.254", "0.0.0.0", "::", "::ffff:127.0.0.1",
    "::ffff:10.0.0.1", "::ffff:169.254.169.254", "fe80::1", "fc00::1", "fd12:3456::1", "224.0.0.1",
    "ff02::1", "240.0.0.1", "255.255.255.255", "2002:7f00:1::1", "64:ff9b::a00:1", "192.0.2.1",
]
PUBLIC = ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "100.128.0.1"]


def with_settings(monkeypatch, **changes):
    monkeypatch.setattr(netguard, "settings", dataclasses.replace(netguard.settings, **changes))


def fake_dns(monkeypatch, table: dict[str, list[str]]):
    def resolve(host, port):
        if host in table:
            return [ipaddress.ip_address(a) for a in table[host]]
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            raise OSError("no such host") from None

    monkeypatch.setattr(netguard, "resolve", resolve)


@pytest.mark.parametrize("address", BLOCKED)
def test_internal_addresses_are_refused(address):
    assert netguard.blocked_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert netguard.blocked_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "[::1]", "10.0.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
                                     "[::ffff:127.0.0.1]", "[fe80::1]", "192.168.1.1", "172.16.5.4"])
def test_urls_with_internal_ip_literals_are_refused(monkeypatch, address):
    with_settings(monkeypatch, fetch_allowlist=())
    with pytest.raises(netguard.Blocked, match="refusing"):
        netguard.check_url(f"http://{address}/latest/meta-data/")


@pytest.mark.parametrize("url", ["http://2130706433/", "http://0x7f.0.0.1/", "http://017700000001/", "http://localhost/"])
def test_odd_spellings_of_loopback_are_refused_after_real_resolution(monkeypatch, url):
    with_settings(monkeypatch, fetch_allowlist=())
    with pytest.raises(netguard.FetchError):
        netguard.check_url(url)


def test_hostname_resolving_to_a_private_address_is_refused(monkeypatch):
    with_settings(monkeypatch, fetch_allowlist=())
    fake_dns(monkeypatch, {"intranet.example.com": ["10.1.2.3"], "sneaky.example.com": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(netguard.Blocked, match="does not resolve to a public address"):
        netguard.check_url("https://intranet.example.com/")
    with pytest.raises(netguard.Blocked, match="does not resolve to a public address"):  # one bad answer is enough
        netguard.check_url("https://sneaky.example.com/")


def test_an_unresolvable_name_and_an_internal_one_get_the_same_answer(monkeypatch):
    """Issue 15: different errors for "cannot resolve" and "private address" let a prompt probe which
    internal host names exist. Both are one Blocked with one message (the host name aside)."""
    with_settings(monkeypatch, fetch_allowlist=())
    fake_dns(monkeypatch, {"db.internal": ["10.0.0.5"]})  # every other name fails to resolve
    errors = []
    for host in ("db.internal", "nothing-here.internal"):
        with pytest.raises(netguard.FetchError) as caught:
            netguard.check_url(f"http://{host}/")
        errors.append((type(caught.value), str(caught.value).replace(host, "HOST")))
    assert errors[0] == errors[1] == (netguard.Blocked, "refusing to fetch HOST: it does not resolve to a public address")


def test_public_hostname_is_pinned_to_the_checked_address(monkeypatch):
    with_settings(monkeypatch, fetch_allowlist=())
    fake_dns(monkeypatch, {"example.com": ["93.184.216.34"]})
    target = netguard.check_url("https://Example.com./a?b=1")
    assert target.ip == ipaddress.ip_address("93.184.216.34")
    assert str(target.pinned_url) == "https://93.184.216.34/a?b=1" and target.host_header == "example.com"


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd", "gopher://x/", "http://user:pw@example.com/",
                                 "not a url", "http:///nohost"])
def test_only_plain_http_and_https_urls(monkeypatch, url):
    fake_dns(monkeypatch, {"example.com": ["93.184.216.34"]})
    with pytest.raises(netguard.Blocked):
        netguard.check_url(url)


def test_allow_list_entries():
    entries = netguard.parse_allowlist(("searx.internal", "127.0.0.1:8888", "10.0.0.0/8", "[::1]:9000"))
    ip = ipaddress.ip_address
    assert netguard.is_allowed("searx.internal", 443, ip("10.9.9.9"), entries)
    assert netguard.is_allowed("anything", 8888, ip("127.0.0.1"), entries)
    assert not netguard.is_allowed("anything", 8889, ip("127.0.0.1"), entries)  # the port is part of the entry
    assert netguard.is_allowed("db", 5432, ip("10.200.0.1"), entries)
    assert netguard.is_allowed("x", 9000, ip("::1"), entries) and not netguard.is_allowed("x", 9001, ip("::1"), entries)
    assert not netguard.is_allowed("other.internal", 443, ip("192.168.0.1"), entries)
    with pytest.raises(ValueError):
        netguard.parse_allow_entry("host:notaport")


def test_allow_listed_host_passes_even_when_private(monkeypatch):
    with_settings(monkeypatch, fetch_allowlist=("searx.internal",))
    fake_dns(monkeypatch, {"searx.internal": ["10.0.0.7"]})
    assert netguard.check_url("http://searx.internal:8080/search").ip == ipaddress.ip_address("10.0.0.7")


def test_allow_listed_server_is_fetched_and_a_redirect_to_a_private_address_is_refused(monkeypatch):
    routes = {"/page": html("<html><title>T</title><body><p>hello</p></body></html>"),
              "/to-metadata": redirect("http://169.254.169.254/latest/meta-data/"),
              "/to-private": redirect("http://10.0.0.1/admin", 301),
              "/to-other-port": redirect("/page")}
    with LocalServer(routes) as server:
        with_settings(monkeypatch, fetch_allowlist=(f"127.0.0.1:{server.port}",))
        page = netguard.fetch(server.url("/page"))
        assert page.status == 200 and b"hello" in page.content and page.content_type == "text/html"
        assert netguard.fetch(server.url("/to-other-port")).status == 200  # a redirect that stays allowed is followed
        with pytest.raises(netguard.Blocked, match="link-local"):
            netguard.fetch(server.url("/to-metadata"))
        with pytest.raises(netguard.Blocked, match="private"):
            netguard.fetch(server.url("/to-private"))
        # the same server on a port that is not allow-listed is loopback, so refused
        with_settings(monkeypatch, fetch_allowlist=(f"127.0.0.1:{server.port + 1}",))
        with pytest.raises(netguard.Blocked, match="loopback"):
            netguard.fetch(server.url("/page"))


def test_connection_goes_to_the_checked_address_with_the_original_host(monkeypatch):
    """No second lookup: a name that real DNS does not know still reaches the address we checked."""
    with LocalServer({"/": html("<p>pinned</p>")}) as server:
        with_settings(monkeypatch, fetch_allowlist=(f"pinned.test:{server.port}",))
        fake_dns(monkeypatch, {"pinned.test": ["127.0.0.1"]})
        page = netguard.fetch(f"http://pinned.test:{server.port}/")
        assert b"pinned" in page.content
        assert server.seen[-1][1]["Host"] == f"pinned.test:{server.port}"


def test_redirect_loops_stop_after_five_hops(monkeypatch):
    with LocalServer({"/loop": redirect("/loop")}) as server:
        with_settings(monkeypatch, fetch_allowlist=(f"127.0.0.1:{server.port}",))
        with pytest.raises(netguard.FetchError, match="too many redirects"):
            netguard.fetch(server.url("/loop"))
        assert len(server.seen) == 6  # the first request and five redirects


def test_size_and_time_limits(monkeypatch):
    def slow(_req):
        time.sleep(2)
        return 200, {"Content-Type": "text/plain"}, b"late"

    routes = {"/big": lambda _req: (200, {"Content-Type": "text/plain"}, b"x" * 200_000), "/slow": slow}
    with LocalServer(routes) as server:
        with_settings(monkeypatch, fetch_allowlist=(f"127.0.0.1:{server.port}",))
        page = netguard.fetch(server.url("/big"), max_bytes=1000)
        assert page.truncated and len(page.content) == 1000
        started = time.monotonic()
        with pytest.raises(netguard.FetchError, match="too long"):
            netguard.fetch(server.url("/slow"), timeout=0.5)
        assert time.monotonic() - started < 1.5


def test_compressed_bodies_are_decoded_within_the_byte_limit(monkeypatch):
    import gzip

    page = b"<p>" + b"squeezed " * 1000 + b"</p>"
    bomb = gzip.compress(b"\0" * 5_000_000)
    routes = {"/gz": lambda _req: (200, {"Content-Type": "text/html", "Content-Encoding": "gzip"}, gzip.compress(page)),
              "/bomb": lambda _req: (200, {"Content-Type": "text/plain", "Content-Encoding": "gzip"}, bomb)}
    with LocalServer(routes) as server:
        with_settings(monkeypatch, fetch_allowlist=(f"127.0.0.1:{server.port}",), fetch_max_bytes=100_000)
        assert netguard.fetch(server.url("/gz")).content == page
        assert len(netguard.fetch(server.url("/bomb")).content) <= 100_000
