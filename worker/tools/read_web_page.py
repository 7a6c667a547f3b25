"""read_web_page: fetch one http(s) page through the SSRF guard and hand the model its readable text."""
from __future__ import annotations

from typing import Any

from shared import netguard
from shared.config import settings
from shared.tools import ToolName
from worker.tools.base import ToolContext, ToolError

NAME = ToolName.READ_WEB_PAGE
SCHEMA = {
    "description": "Fetch a public web page (http or https) and return its title and readable text. "
    "Private, internal and local network addresses are refused; big pages are cut short.",
    "parameters": {
        "type": "object",
        "properties": {"url": {"type": "string", "maxLength": 2048,
                               "description": "The absolute http:// or https:// URL to read."}},
        "required": ["url"],
    },
}

HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("application/json", "application/xml", "application/javascript")


def html_to_text(html: bytes) -> tuple[str, str]:
    """(title, readable text) of an HTML document: trafilatura's main-content extraction, plain text as fallback."""
    import trafilatura
    from lxml import html as lxml_html

    document = trafilatura.bare_extraction(html, with_metadata=True, include_comments=False)
    title = (getattr(document, "title", None) or "").strip()
    text = (getattr(document, "text", None) or "").strip()
    if not text or not title:
        try:
            tree = lxml_html.fromstring(html)
        except (ValueError, TypeError, SyntaxError):  # lxml raises ParserError (a ValueError) on empty input
            tree = None
        if tree is not None:
            title = title or (tree.findtext(".//title") or "").strip()
            for junk in tree.xpath("//script|//style|//noscript"):
                junk.drop_tree()
            text = text or " ".join(tree.text_content().split())
    return title, text


def read(url: str) -> dict[str, Any]:
    try:
        page = netguard.fetch(url, headers={"Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5"})
    except netguard.FetchError as exc:
        raise ToolError(str(exc)) from None
    if page.status >= 400:
        raise ToolError(f"the server answered HTTP {page.status}")
    kind = page.content_type
    if kind in HTML_TYPES or (not kind and page.content.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))):
        title, text = html_to_text(page.content)
    elif kind.startswith("text/") or kind in TEXT_TYPES or not kind:
        title, text = "", page.text().strip()
    else:
        raise ToolError(f"cannot read a page of type {kind}")
    limit = settings.fetch_text_chars
    return {"url": page.url, "title": title, "text": text[:limit],
            "truncated": page.truncated or len(text) > limit}


def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    url = args["url"]
    if not url.strip():
        raise ToolError("'url' must not be empty")
    return read(url.strip())
