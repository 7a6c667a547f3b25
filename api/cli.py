"""flask --app api users|tokens|demo … : administration from the command line."""
from __future__ import annotations

from datetime import timedelta

import click
from flask import Flask

from shared.errors import ThreadlineError
from shared.services import identity


def _perms(value: str | None) -> list[str] | None:
    return [p.strip() for p in value.split(",") if p.strip()] if value is not None else None


def register_cli(app: Flask) -> None:
    @app.cli.group()
    def users():
        """Manage users."""

    @users.command("create")
    @click.argument("email")
    @click.option("--tenant", required=True, help="Tenant name (created on first use).")
    @click.option("--id", "user_id", help="User id, e.g. user-123 (default: a UUID).")
    @click.option("--password", help="Password for cookie login (chats dialect).")
    @click.option("--permissions", help="Comma-separated permissions (default: all).")
    def create_user(email, tenant, user_id, password, permissions):
        """Create a user."""
        try:
            user = identity.create_user(email, tenant, user_id=user_id, password=password, perms=_perms(permissions))
        except (ThreadlineError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"created user {user.id} <{user.email}> in tenant {tenant}")

    @app.cli.group()
    def tokens():
        """Manage API tokens."""

    @tokens.command("create")
    @click.argument("email")
    @click.option("--name", default="", help="A label for the token.")
    @click.option("--permissions", help="Comma-separated subset of the user's permissions (default: all of them).")
    @click.option("--expires-in-days", type=click.IntRange(min=1), help="Expire after this many days.")
    def create_token(email, name, permissions, expires_in_days):
        """Create a token and print it once (only its hash is stored)."""
        try:
            plain, _ = identity.create_token(
                email, name=name, perms=_perms(permissions),
                expires_in=timedelta(days=expires_in_days) if expires_in_days else None,
            )
        except (ThreadlineError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(plain)

    @tokens.command("revoke")
    @click.argument("token_id")
    def revoke_token(token_id):
        """Revoke a token by its id."""
        import uuid

        identity.revoke_token(uuid.UUID(token_id))
        click.echo("revoked")

    @app.cli.command("demo")
    @click.option("--email", default="demo@example.com")
    @click.option("--base-url", default="http://127.0.0.1:8000")
    def demo(email, base_url):
        """Create the demo user (once) and print a fresh token with a curl command that works."""
        try:
            identity.user_by_email(email)
        except ThreadlineError:
            identity.create_user(email, "demo", user_id="user-123", password="demo-password")
        plain, _ = identity.create_token(email, name="demo")
        click.echo(f"\nDemo user: {email} (password demo-password)\nToken: {plain}\n\nTry it:\n")
        click.echo(
            f"  TOKEN={plain}\n"
            f"  THREAD=$(curl -s -X POST {base_url}/api/v1/ai/threads -H \"Authorization: Bearer $TOKEN\" "
            f"-H 'Content-Type: application/json' -d '{{\"title\": \"Demo\"}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"id\"])')\n"
            f"  curl -s -X POST \"{base_url}/api/v1/ai/threads/$THREAD/messages?wait=10\" -H \"Authorization: Bearer $TOKEN\" "
            f"-H 'Content-Type: application/json' -d '{{\"content\": \"Hello!\"}}'\n"
        )
