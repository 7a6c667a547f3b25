"""A tiny HTTP server on 127.0.0.1 for web-tool tests: routes map a path to (status, headers, body)."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

Route = Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]


class LocalServer:
    def __init__(self, routes: dict[str, Route], port: int = 0):
        self.routes = routes
        self.seen: list[tuple[str, dict[str, str]]] = []  # (path with query, headers) of every request
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's naming
                server.seen.append((self.path, dict(self.headers)))
                route = server.routes.get(urlsplit(self.path).path)
                status, headers, body = route(self) if route else (404, {"Content-Type": "text/plain"}, b"not found")
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *_args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> "LocalServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def html(body: str, status: int = 200) -> Route:
    return lambda _req: (status, {"Content-Type": "text/html; charset=utf-8"}, body.encode())


def redirect(location: str, status: int = 302) -> Route:
    return lambda _req: (status, {"Location": location}, b"")
