"""``flask --app api users|tokens|docs|workflows|webhooks|reports|models|demo …``: administration from the command line.

One module per command group; each defines a ``flask.cli.AppGroup`` (or command) and this module adds
them to the app. Failures of the services become one-line click errors (``common.service_errors``).
"""
from __future__ import annotations

from flask import Flask

from api.cli import demo, docs, models, reports, tokens, users, webhooks, workflows


def register_cli(app: Flask) -> None:
    for module in (users, tokens, docs, workflows, webhooks, reports, models, demo):
        app.cli.add_command(module.command)
