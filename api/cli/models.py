"""``flask models list|check``: the model registry, and whether each model answers.

``check`` sends one tiny request per model (or the ones named with ``--model``) and prints one line
each: ok or FAILED, the seconds it took, the start of the answer or the provider's error. Exit status
1 when any failed, so a deployment script can stop before users see a broken model."""
from __future__ import annotations

import click
from flask.cli import AppGroup

from shared.config import settings
from shared.services import model_check

command = AppGroup("models", help="The model registry: list it, check each model answers.")


@command.command("list")
def list_models():
    """Every model id with its real model name and server; the default is marked with *."""
    for entry in settings.models.values():
        mark = "*" if entry.id == settings.default_model_id else " "
        click.echo(f"{mark} {entry.id:<16} {entry.model:<20} {entry.base_url}  key ${entry.api_key_env}")


@command.command("check")
@click.option("--model", "model_ids", multiple=True, help="Only this model id (repeatable).")
@click.option("--timeout", type=click.FloatRange(min=1), default=20.0, show_default=True, help="Seconds per model.")
def check_models(model_ids, timeout):
    """Send one tiny request to each configured model and report each."""
    unknown = sorted(set(model_ids) - set(settings.models))
    if unknown:
        raise click.ClickException(f"unknown model id(s): {', '.join(unknown)}; known: {', '.join(settings.models)}")
    entries = [e for e in settings.models.values() if not model_ids or e.id in model_ids]
    failed = 0
    for entry in entries:
        result = model_check.check(entry, timeout=timeout)
        failed += not result.ok
        state = "ok" if result.ok else "FAILED"
        click.echo(f"{state:<6} {result.model_id:<16} {result.model} at {result.base_url}  "
                   f"{result.seconds:.2f}s  {result.detail}")
    click.echo(f"{len(entries) - failed} of {len(entries)} model(s) answered", err=True)
    if failed:
        raise SystemExit(1)
