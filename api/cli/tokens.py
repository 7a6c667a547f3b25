"""``flask tokens create|revoke``: bearer tokens (only their hash is stored)."""
from __future__ import annotations

from datetime import timedelta

import click
from flask.cli import AppGroup

from api.cli.common import service_errors, split_list
from shared.services import identity

command = AppGroup("tokens", help="Manage API tokens.")


@command.command("create")
@click.argument("email")
@click.option("--name", default="", help="A label for the token.")
@click.option("--permissions", help="Comma-separated subset of the user's permissions (default: all of them).")
@click.option("--expires-in-days", type=click.IntRange(min=1), help="Expire after this many days.")
def create_token(email, name, permissions, expires_in_days):
    """Create a token and print it once (only its hash is stored)."""
    with service_errors():
        plain, _ = identity.create_token(
            email, name=name, perms=split_list(permissions),
            expires_in=timedelta(days=expires_in_days) if expires_in_days else None,
        )
    click.echo(plain)


@command.command("revoke")
@click.argument("token_id", type=click.UUID)
def revoke_token(token_id):
    """Revoke a token by its id."""
    with service_errors():
        identity.revoke_token(token_id)
    click.echo("revoked")
