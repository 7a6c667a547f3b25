"""The Swagger UI at ``/docs``, with its assets served by this API from an installed, pinned package.

flask-smorest renders ``/docs`` as a page that loads ``swagger-ui-bundle.js``, the standalone preset
and ``swagger-ui.css`` from ``OPENAPI_SWAGGER_UI_URL``. Pointing that at a CDN made ``/docs`` a blank
page without internet and ran unpinned third-party script on the cookie origin. The assets come from
the ``flask-swagger-ui`` distribution instead (requirements/base.txt pins it; its ``dist/`` folder is
Swagger UI 5.x with its Apache-2.0 licence, which renders OpenAPI 3.1 — the ``swagger-ui-bundle``
distribution ships Swagger UI 4, which does not). Only those files are served, nothing else from the
package.
"""
from __future__ import annotations

from importlib.resources import files

from flask import Blueprint, Flask, abort, send_from_directory

ASSET_URL = "/docs/assets/"
ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css",
                    "favicon-16x16.png", "favicon-32x32.png", "LICENSE", "VERSION"})
ONE_DAY = 24 * 3600

blp = Blueprint("docs_ui", __name__)


def asset_folder() -> str:
    return str(files("flask_swagger_ui") / "dist")


@blp.get(f"{ASSET_URL}<name>")
def asset(name: str):
    """One Swagger UI file from the installed package (an allow-list: nothing else is served)."""
    if name not in ASSETS:
        abort(404)
    return send_from_directory(asset_folder(), name, max_age=ONE_DAY)


def install(app: Flask) -> None:
    from api.extensions import limiter

    limiter.exempt(blp)
    app.register_blueprint(blp)
