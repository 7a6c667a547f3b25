"""``flask tokens create|list|revoke``: bearer tokens (only their hash is stored).

``create`` prints the token id (what ``revoke`` takes) on its own line, then the plain token on the
last line (shown once; scripts take the last line). ``list`` shows ids, owners, names, prefixes and
states, never a token. ``revoke`` fails (exit 1) on a malformed id or one that names no token."""
from __future__ import annotations

import uuid
from datetime import timedelta

import click
from flask.cli import AppGroup

from api.cli.common import service_errors, split_list
from shared.models import utcnow
from shared.services import identity

command = AppGroup("tokens", help="Manage API tokens.")


@command.command("create")
@click.argument("email")
@click.option("--name", default="", help="A label for the token.")
@click.option("--permissions", help="Comma-separated subset of the user's permissions (default: all of them).")
@click.option("--expires-in-days", type=click.IntRange(min=1), help="Expire after this many days.")
def create_token(email, name, permissions, expires_in_days):
    """Create a token: print its id, then the token itself once (only its hash is stored)."""
    with service_errors():
        plain, row = identity.create_token(
            email, name=name, perms=split_list(permissions),
            expires_in=timedelta(days=expires_in_days) if expires_in_days else None,
        )
    click.echo(f"token id: {row.id}")
    click.echo(plain)


def _state(token) -> str:
    if token.revoked_at is not None:
        return f"revoked {token.revoked_at:%Y-%m-%d %H:%M}"
    if token.expires_at is not None and token.expires_at <= utcnow():
        return f"expired {token.expires_at:%Y-%m-%d %H:%M}"
    return "active" + (f" until {token.expires_at:%Y-%m-%d}" if token.expires_at else "")


@command.command("list")
@click.option("--email", help="Only this user's tokens.")
def list_tokens(email):
    """List API tokens: id, owner, name, prefix, permissions, state (never the token)."""
    with service_errors():
        rows = identity.list_tokens(email)
    for token, owner in rows:
        scope = ",".join(token.permissions) if token.permissions is not None else "all"
        click.echo(f"{token.id}  {owner}  {token.name or '-'}  {token.prefix}…  {scope}  {_state(token)}")
    if not rows:
        click.echo("no tokens", err=True)


def _token_id(ctx, param, value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a token id (a UUID, as `flask tokens list` shows).") from None


@command.command("revoke")
@click.argument("token_id", callback=_token_id)
def revoke_token(token_id):
    """Revoke a token by its id (see `flask tokens list`); fails on an unknown id."""
    with service_errors():
        identity.revoke_token(token_id)
    click.echo(f"revoked {token_id}")
