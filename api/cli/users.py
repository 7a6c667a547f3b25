"""``flask users create``: users and their tenants."""
from __future__ import annotations

import click
from flask.cli import AppGroup

from api.cli.common import service_errors, split_list
from shared.services import identity

command = AppGroup("users", help="Manage users.")


@command.command("create")
@click.argument("email")
@click.option("--tenant", required=True, help="Tenant name (created on first use).")
@click.option("--id", "user_id", help="User id, e.g. user-123 (default: a UUID).")
@click.option("--password", help="Password for cookie login (chats dialect).")
@click.option("--permissions", help="Comma-separated permissions (default: all).")
def create_user(email, tenant, user_id, password, permissions):
    """Create a user."""
    with service_errors():
        user = identity.create_user(email, tenant, user_id=user_id, password=password, perms=split_list(permissions))
    click.echo(f"created user {user.id} <{user.email}> in tenant {tenant}")
