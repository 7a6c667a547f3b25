"""web_search: ask a search provider (SearXNG's JSON API first) and return the top results.

Providers are small classes with ``search(query, limit)``; ``WEB_SEARCH_PROVIDER`` picks one and
``WEB_SEARCH_URL`` says where it is. Their requests go through the same SSRF guard as page reads, so
an internal search service must be allow-listed by the operator (FETCH_ALLOWLIST).
"""
from __future__ import annotations

import json
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


PROVIDERS: dict[str, type] = {"searxng": SearxngProvider}


def provider() -> SearchProvider | None:
    """The configured provider, or None when web search is not set up."""
    if not settings.web_search_url:
        return None
    factory = PROVIDERS.get(settings.web_search_provider)
    if factory is None:
        raise ProviderError(f"unknown web search provider '{settings.web_search_provider}'")
    return factory(settings.web_search_url)


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
