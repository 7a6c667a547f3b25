"""``flask users create``: users and their tenants.

A password never goes on the command line (it would sit in the shell history and in ``ps`` for every
local user to read): ``--password`` prompts for it (twice, hidden); scripts pipe it with
``--password-stdin`` (the first line of standard input). Without either the user has no password
(bearer tokens only)."""
from __future__ import annotations

import sys

import click
from flask.cli import AppGroup

from api.cli.common import service_errors, split_list
from shared.services import identity

command = AppGroup("users", help="Manage users.")


def read_password(prompt: bool, from_stdin: bool) -> str | None:
    """The password from the one source asked for, or None when none was."""
    if prompt and from_stdin:
        raise click.UsageError("Give the password one way: --password (prompt) or --password-stdin.")
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif prompt:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        return None
    if not password:
        raise click.UsageError("The password is empty.")
    return password


@command.command("create")
@click.argument("email")
@click.option("--tenant", required=True, help="Tenant name (created on first use).")
@click.option("--id", "user_id", help="User id, e.g. user-123 (default: a UUID).")
@click.option("--password", "prompt_password", is_flag=True,
              help="Prompt for a password for cookie login (chats dialect).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--permissions", help="Comma-separated permissions or roles: user (the default), moderator "
              "(user + reports.read, reports.manage).")
def create_user(email, tenant, user_id, prompt_password, password_stdin, permissions):
    """Create a user. A password: --password prompts for it, --password-stdin reads it (for scripts)."""
    password = read_password(prompt_password, password_stdin)
    with service_errors():
        user = identity.create_user(email, tenant, user_id=user_id, password=password, perms=split_list(permissions))
    click.echo(f"created user {user.id} <{user.email}> in tenant {tenant}")
