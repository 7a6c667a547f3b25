"""A real model in one step: OPENAI_API_KEY alone means OpenAI with a sensible default model, make run
says which model answers, ``flask models check`` asks each model once (here: the scripted model over
real HTTP), and web_search is offered only with a configured provider (Brave Search against a local stub)."""
from __future__ import annotations

import dataclasses
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from devtools.stack import free_port
from tests.local_http import LocalServer


def _load(monkeypatch, **env):
    from shared import config

    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "MODELS_FILE", "DEFAULT_MODEL_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return config.load()


def test_a_key_alone_means_openai_with_a_small_default_model(monkeypatch):
    from shared.config import OPENAI_URL

    settings = _load(monkeypatch, OPENAI_API_KEY="sk-test")
    assert settings.default_model_id == "gpt-4o-mini"
    assert settings.answering_model.base_url == OPENAI_URL == "https://api.openai.com/v1"
    assert "threadline-dev" not in settings.models and "gpt-4" in settings.models
    assert not settings.uses_scripted_model
    assert _load(monkeypatch, OPENAI_API_KEY="sk-test", DEFAULT_MODEL_ID="gpt-4.1").default_model_id == "gpt-4.1"


def test_without_a_key_or_with_a_base_url_nothing_changes(monkeypatch):
    bare = _load(monkeypatch)
    assert bare.default_model_id == "threadline-dev" and bare.uses_scripted_model
    assert bare.answering_model.base_url == bare.scripted_model_url
    other = _load(monkeypatch, OPENAI_API_KEY="k", OPENAI_BASE_URL="http://vllm.internal:8000/v1")
    assert other.default_model_id == "threadline-dev"
    assert {e.base_url for e in other.models.values()} == {"http://vllm.internal:8000/v1"}


def test_make_run_says_which_model_answers_and_starts_the_scripted_one_only_when_used(monkeypatch):
    from devtools import processes
    from devtools.run import answering_model_line

    line = answering_model_line(_load(monkeypatch, OPENAI_API_KEY="sk-test"))
    assert line == "answering model: gpt-4o-mini (model gpt-4o-mini) at https://api.openai.com/v1; key from $OPENAI_API_KEY"
    assert "sk-test" not in line
    assert "scripted development model" in answering_model_line(_load(monkeypatch))
    assert "not in the registry" in answering_model_line(_load(monkeypatch, DEFAULT_MODEL_ID="nope"))
    assert "model" not in processes.local_processes("127.0.0.1:1", "runs", "s", with_model=False)
    assert list(processes.local_processes("127.0.0.1:1", "runs", "s")) == ["model", "worker", "beat", "api"]


def test_models_check_asks_each_model_once(stack):
    from api import create_app
    from shared.config import settings

    runner = create_app().test_cli_runner()
    result = runner.invoke(args=["models", "check"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("ok", "FAILED"))]
    assert len(lines) == len(settings.models) and all(line.startswith("ok ") for line in lines), result.output
    assert f"{len(settings.models)} of {len(settings.models)} model(s) answered" in result.output
    assert "(Threadline development model)" in result.output  # the scripted model's answer, over HTTP
    one = runner.invoke(args=["models", "check", "--model", "gpt-4"])
    assert one.exit_code == 0 and "1 of 1 model(s) answered" in one.output
    unknown = runner.invoke(args=["models", "check", "--model", "nope"])
    assert unknown.exit_code == 1 and "unknown model id(s): nope" in unknown.output
    listed = runner.invoke(args=["models", "list"])
    assert listed.exit_code == 0 and f"* {settings.default_model_id}" in listed.output


def test_a_model_that_does_not_answer_is_reported_not_raised():
    from shared.config import ModelEntry
    from shared.services import model_check

    dead = ModelEntry(id="dead", model="m", base_url=f"http://127.0.0.1:{free_port()}/v1")
    result = model_check.check(dead, timeout=3)
    assert not result.ok and result.detail.startswith("cannot connect") and result.seconds < 5
    with LocalServer({}) as server:  # serves GET only: the completion's POST gets HTTP 501
        result = model_check.check(ModelEntry(id="wrong-server", model="m", base_url=server.url("/v1")), timeout=3)
    assert not result.ok and result.detail.startswith("HTTP 501"), result.detail


# -- web_search: offered only when configured; Brave Search against a local stub ------------------------

BRAVE_ANSWER = {"type": "search", "web": {"results": [
    {"title": f"<strong>Queue</strong> {i}", "url": f"https://example.org/q{i}", "description": f"about <strong>queues</strong> {i}"}
    for i in range(1, 8)
]}}


@pytest.fixture
def brave(web_ports):
    """A stand-in for api.search.brave.com on a port the fetcher allow-lists (conftest's FETCH_ALLOWLIST)."""
    def search(request):
        if request.headers.get("X-Subscription-Token") != "brave-key":
            return 401, {"Content-Type": "application/json"}, b'{"error": "unauthorized"}'
        return 200, {"Content-Type": "application/json"}, json.dumps(BRAVE_ANSWER).encode()

    with LocalServer({"/res/v1/web/search": search}, port=web_ports["searx"]) as server:
        yield server


def _with(monkeypatch, **changes):
    from worker.tools import web_search

    monkeypatch.setattr(web_search, "settings", dataclasses.replace(web_search.settings, **changes))


def test_brave_search_through_the_tool(monkeypatch, brave):
    from worker.tools import web_search

    _with(monkeypatch, web_search_provider="brave", web_search_api_key="brave-key",
          web_search_url=brave.url("/res/v1"))
    results = web_search.run({"query": "durable queues"}, None)["results"]
    assert len(results) == 5
    assert results[0] == {"title": "Queue 1", "url": "https://example.org/q1", "snippet": "about queues 1"}
    path, headers = brave.seen[-1]
    assert parse_qs(urlsplit(path).query) == {"q": ["durable queues"], "count": ["5"]}
    assert headers["X-Subscription-Token"] == "brave-key"
    _with(monkeypatch, web_search_provider="brave", web_search_api_key="wrong", web_search_url=brave.url("/res/v1"))
    with pytest.raises(web_search.ToolError, match="HTTP 401 \\(is WEB_SEARCH_API_KEY right\\?\\)"):
        web_search.run({"query": "x"}, None)


def test_brave_defaults_to_its_public_endpoint(monkeypatch):
    from worker.tools import web_search

    _with(monkeypatch, web_search_provider="brave", web_search_api_key="k", web_search_url="")
    chosen = web_search.provider()
    assert isinstance(chosen, web_search.BraveProvider) and chosen.base_url == "https://api.search.brave.com/res/v1"


@pytest.mark.parametrize("changes, offered", [
    ({"web_search_provider": "searxng", "web_search_url": "http://searx.internal"}, True),
    ({"web_search_provider": "searxng", "web_search_url": ""}, False),
    ({"web_search_provider": "brave", "web_search_api_key": "k", "web_search_url": ""}, True),
    ({"web_search_provider": "brave", "web_search_api_key": "", "web_search_url": "http://x"}, False),
    ({"web_search_provider": "bing", "web_search_url": "http://x"}, False),
])
def test_web_search_is_offered_only_with_a_configured_provider(monkeypatch, changes, offered):
    from worker import tools

    _with(monkeypatch, **changes)
    names = [tool.NAME for tool in tools.available(None)]
    assert ("web_search" in names) is offered
    assert "read_web_page" in names  # the other tools stay
    assert "web_search" not in [t.NAME for t in tools.available(["read_web_page"])]
