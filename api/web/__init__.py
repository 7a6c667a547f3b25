"""The chat page: a small browser client of the chats dialect, served by the API itself at ``/`` and
``/chat`` so someone evaluating Threadline can talk to it before writing a client.

Everything it does goes through the public chats API with the cookie session (login, chats, messages,
SSE streams, cancel, ``/api/models``, ``/api/workflows``): the page has no private endpoints, so it
is also a worked example of a client. Its assets are plain files in this package (no build step, no
CDN), and every response of this blueprint carries a strict Content-Security-Policy: scripts and
styles only from this origin, no inline code, so a message that smuggles HTML could not run anything
even if the renderer let it through (it does not: static/markdown.js escapes first).
"""
from __future__ import annotations

from flask import Blueprint, Response, render_template

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/web/static")

# default-src 'self' covers fetch/EventSource (connect-src) and images; nothing inline, no plugins, no
# framing, no <base> tricks. The page needs nothing else.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                           "frame-ancestors 'none'")


@bp.after_request
def security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.route("/")
@bp.route("/chat")
def chat_page():
    """The single page; it signs in and loads its data through the chats API."""
    response = Response(render_template("chat.html"))
    response.headers["Cache-Control"] = "no-cache"
    return response
