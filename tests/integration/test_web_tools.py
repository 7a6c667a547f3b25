"""web_search and read_web_page through the real stack: HTTP → worker → scripted model → tool → answer.

conftest allow-lists exactly two local ports for the stack's fetcher (a page server and a fake SearXNG);
everything else on 127.0.0.1 and every internal address stays refused.
"""
from __future__ import annotations

import dataclasses
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.answers import post_and_wait
from tests.local_http import LocalServer, html, redirect
from devtools.stack import free_port

ARTICLE = """<!doctype html><html><head><title>Queue notes</title></head><body>
<nav><a href="/">Home</a> <a href="/about">About</a></nav>
<article><h1>Why queues</h1>
<p>The pineapple protocol keeps every message in the database before the broker sees it.</p>
<p>Workers claim runs with a lease, so a crashed worker's run is picked up again by the sweeper.</p>
</article><script>var secret = "do-not-show";</script></body></html>"""
SEARX_RESULTS = {"query": "x", "results": [
    {"title": f"Result {i}", "url": f"https://example.org/{i}", "content": f"snippet {i}", "engine": "fake"}
    for i in range(1, 9)
]}


@pytest.fixture(scope="module")
def blocked_server():
    """A server on a port the stack does NOT allow-list: nothing may ever reach it."""
    with LocalServer({"/": html("<p>internal admin</p>")}, port=free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def page_server(web_ports, blocked_server):
    routes = {
        "/article": html(ARTICLE),
        "/plain": lambda _req: (200, {"Content-Type": "text/plain; charset=utf-8"}, "just text, ünïcode".encode()),
        "/image": lambda _req: (200, {"Content-Type": "image/png"}, b"\x89PNG...."),
        "/hop": redirect("/article", 301),
        "/out": redirect(blocked_server.url("/")),
        "/metadata": redirect("http://169.254.169.254/latest/meta-data/iam/"),
    }
    with LocalServer(routes, port=web_ports["page"]) as server:
        yield server


@pytest.fixture(scope="module")
def searx(web_ports):
    routes = {"/search": lambda _req: (200, {"Content-Type": "application/json"}, json.dumps(SEARX_RESULTS).encode())}
    with LocalServer(routes, port=web_ports["searx"]) as server:
        yield server


def ask(client, content: str) -> dict:
    thread = client.post("/api/v1/ai/threads", json={"title": "web"}).json()["id"]
    answer = post_and_wait(client, thread, {"content": content})
    assert answer["status"] == "completed", answer
    return answer


def tool_step(answer: dict, name: str) -> dict:
    steps = [s for s in answer["steps"] if s["kind"] == "tool_call" and s["name"] == name]
    assert len(steps) == 1, answer["steps"]
    return steps[0]


def test_read_a_page_from_an_allow_listed_server(client, page_server):
    answer = ask(client, f"Please read {page_server.url('/article')} and summarise it")
    step = tool_step(answer, "read_web_page")
    output = json.loads(step["output"])
    assert step["status"] == "completed" and output["url"] == page_server.url("/article")
    assert "pineapple protocol" in output["text"] and "do-not-show" not in output["text"]
    assert output["title"]
    assert "pineapple protocol" in answer["content"]


def test_redirects_within_the_allow_list_are_followed_and_plain_text_passes(client, page_server):
    answer = ask(client, f"read {page_server.url('/hop')}")
    assert "pineapple protocol" in json.loads(tool_step(answer, "read_web_page")["output"])["text"]
    answer = ask(client, f"open {page_server.url('/plain')}")
    assert json.loads(tool_step(answer, "read_web_page")["output"])["text"] == "just text, ünïcode"
    answer = ask(client, f"read {page_server.url('/image')}")
    assert "cannot read a page of type image/png" in answer["content"]


def test_a_redirect_to_a_port_that_is_not_allow_listed_is_refused(client, page_server, blocked_server):
    seen_before = len(blocked_server.seen)
    answer = ask(client, f"read {page_server.url('/out')}")
    step = tool_step(answer, "read_web_page")
    assert step["status"] == "failed" and "loopback" in json.loads(step["output"])["error"]
    assert "The tool read_web_page failed: refusing to fetch 127.0.0.1" in answer["content"]
    assert len(blocked_server.seen) == seen_before  # the request never reached it


@pytest.mark.parametrize("url, why", [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.0.0.1/admin", "private"),
    ("http://[::1]:{port}/", "loopback"),
    ("http://localhost:{port}/", "does not resolve to a public address"),  # a name: no detail (no DNS probing)
    ("http://100.64.0.1/", "CGNAT"),
])
def test_internal_addresses_are_refused(client, blocked_server, url, why):
    call = json.dumps({"url": url.format(port=blocked_server.port)})  # the directive: the model's URL rule skips [::1]
    answer = ask(client, f"[[tool:read_web_page {call}]] read it")
    assert why in json.loads(tool_step(answer, "read_web_page")["output"])["error"]
    assert "internal admin" not in answer["content"]


def test_a_redirect_to_the_metadata_service_is_refused(client, page_server):
    answer = ask(client, f"read {page_server.url('/metadata')}")
    assert "link-local" in json.loads(tool_step(answer, "read_web_page")["output"])["error"]


def test_web_search_through_searxng(client, searx):
    answer = ask(client, "search the web for durable task queues")
    step = tool_step(answer, "web_search")
    results = json.loads(step["output"])["results"]
    assert len(results) == 5
    assert results[0] == {"title": "Result 1", "url": "https://example.org/1", "snippet": "snippet 1"}
    assert "Top web results: 1. Result 1 (https://example.org/1)" in answer["content"]
    query = parse_qs(urlsplit(searx.seen[-1][0]).query)
    assert query == {"q": ["durable task queues"], "format": ["json"]}


def test_web_search_that_is_not_configured_says_so(monkeypatch):
    from worker.tools import ToolError, web_search

    monkeypatch.setattr(web_search, "settings", dataclasses.replace(web_search.settings, web_search_url=""))
    with pytest.raises(ToolError, match=r"web search is not configured \(set WEB_SEARCH_URL\)"):
        web_search.run({"query": "anything"}, None)


def test_html_to_text_falls_back_for_tiny_pages():
    from worker.tools.read_web_page import html_to_text

    title, text = html_to_text(b"<html><head><title>Tiny</title></head><body><p>Hi.</p><script>x()</script></body></html>")
    assert title == "Tiny" and "Hi." in text and "x()" not in text
