"""web_search: ask a search provider and return the top results.

Providers are small classes with ``search(query, limit)``; ``WEB_SEARCH_PROVIDER`` picks one:
``searxng`` (a SearXNG you run: ``WEB_SEARCH_URL``) or ``brave`` (Brave Search's API: a key in
``WEB_SEARCH_API_KEY``; ``WEB_SEARCH_URL`` defaults to its public endpoint). The tool is offered to
the model only when its provider is configured (``configured()``): a model never sees a tool that can
only fail. Requests go through the same SSRF guard as page reads, so an internal search service must
be allow-listed by the operator (FETCH_ALLOWLIST).
"""
from __future__ import annotations

import json
import re
from typing import Any, Protocol

import httpx

from shared import netguard
from shared.config import settings
from shared.tools import ToolName
from worker.tools.base import ToolContext, ToolError

NAME = ToolName.WEB_SEARCH
SCHEMA = {
    "description": "Search the web. Returns up to 5 results with title, url and a snippet; read a result "
    "with read_web_page.",
    "parameters": {
        "type": "object",
        "properties": {"query": {"type": "string", "maxLength": 500, "description": "What to search for."}},
        "required": ["query"],
    },
}

MAX_RESULTS = 5
NOT_CONFIGURED = "web search is not configured (set WEB_SEARCH_URL)"
BRAVE_URL = "https://api.search.brave.com/res/v1"


class ProviderError(Exception):
    """The provider failed; the message is safe to show."""


class SearchProvider(Protocol):
    def search(self, query: str, limit: int) -> list[dict[str, str]]: ...


class SearxngProvider:
    """SearXNG's JSON API: ``GET {base}/search?q=…&format=json`` (enable ``json`` in its search.formats)."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")

    def search(self, query: str, limit: int) -> list[dict[str, str]]:
        url = httpx.URL(f"{self.base_url}/search", params={"q": query, "format": "json"})
        try:
            page = netguard.fetch(str(url), headers={"Accept": "application/json"})
        except netguard.FetchError as exc:
            raise ProviderError(f"the search service could not be reached: {exc}") from None
        if page.status != 200:
            hint = " (is the json format enabled in SearXNG's settings?)" if page.status == 403 else ""
            raise ProviderError(f"the search service answered HTTP {page.status}{hint}")
        try:
            data = json.loads(page.content)
        except ValueError:
            raise ProviderError("the search service did not answer with JSON") from None
        results = data.get("results") if isinstance(data, dict) else None
        found = []
        for item in results if isinstance(results, list) else []:
            if isinstance(item, dict) and isinstance(item.get("url"), str) and item["url"]:
                found.append({
                    "title": str(item.get("title") or "")[:300],
                    "url": item["url"][:2048],
                    "snippet": str(item.get("content") or "")[:500],
                })
            if len(found) >= limit:
                break
        return found


_TAGS = re.compile(r"<[^>]+>")


class BraveProvider:
    """Brave Search's web search API: ``GET {base}/web/search?q=…&count=N`` with the subscription token
    in ``X-Subscription-Token``; results are under ``web.results`` (title, url, description with
    ``<strong>`` highlights, which are dropped)."""

    def __init__(self, base_url: str, api_key: str):
        self.base_url = (base_url or BRAVE_URL).rstrip("/")
        self.api_key = api_key

    def search(self, query: str, limit: int) -> list[dict[str, str]]:
        url = httpx.URL(f"{self.base_url}/web/search", params={"q": query, "count": limit})
        try:
            page = netguard.fetch(str(url), headers={"Accept": "application/json", "X-Subscription-Token": self.api_key})
        except netguard.FetchError as exc:
            raise ProviderError(f"the search service could not be reached: {exc}") from None
        if page.status != 200:
            hint = " (is WEB_SEARCH_API_KEY right?)" if page.status in (401, 403) else ""
            raise ProviderError(f"the search service answered HTTP {page.status}{hint}")
        try:
            data = json.loads(page.content)
        except ValueError:
            raise ProviderError("the search service did not answer with JSON") from None
        web = data.get("web") if isinstance(data, dict) else None
        results = web.get("results") if isinstance(web, dict) else None
        found = []
        for item in results if isinstance(results, list) else []:
            if isinstance(item, dict) and isinstance(item.get("url"), str) and item["url"]:
                found.append({
                    "title": _TAGS.sub("", str(item.get("title") or ""))[:300],
                    "url": item["url"][:2048],
                    "snippet": _TAGS.sub("", str(item.get("description") or ""))[:500],
                })
            if len(found) >= limit:
                break
        return found


PROVIDERS: dict[str, type] = {"searxng": SearxngProvider, "brave": BraveProvider}


def configured() -> bool:
    """True when the configured provider has what it needs (SearXNG: a URL; Brave: a key)."""
    if settings.web_search_provider == "brave":
        return bool(settings.web_search_api_key)
    return settings.web_search_provider in PROVIDERS and bool(settings.web_search_url)


def provider() -> SearchProvider | None:
    """The configured provider, or None when web search is not set up."""
    name = settings.web_search_provider
    if name not in PROVIDERS:
        raise ProviderError(f"unknown web search provider '{name}' (known: {', '.join(PROVIDERS)})")
    if not configured():
        return None
    if name == "brave":
        return BraveProvider(settings.web_search_url, settings.web_search_api_key)
    return SearxngProvider(settings.web_search_url)


def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    query = args["query"]
    if not query.strip():
        raise ToolError("'query' must not be empty")
    try:
        chosen = provider()
        if chosen is None:
            raise ToolError(NOT_CONFIGURED)
        return {"results": chosen.search(query.strip(), MAX_RESULTS)}
    except ProviderError as exc:
        raise ToolError(str(exc)) from None
