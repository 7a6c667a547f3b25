"""``flask demo``: the demo user ``make run`` prints a token and a working curl command for."""
from __future__ import annotations

import click
from flask.cli import with_appcontext

from shared.errors import ThreadlineError
from shared.services import identity

DEMO_USER_ID, DEMO_PASSWORD = "user-123", "demo-password"


@click.command("demo")
@click.option("--email", default="demo@example.com")
@click.option("--base-url", default="http://127.0.0.1:8000")
@with_appcontext
def command(email, base_url):
    """Create the demo user (once) and print a fresh token with a curl command that works."""
    try:
        identity.user_by_email(email)
    except ThreadlineError:
        identity.create_user(email, "demo", user_id=DEMO_USER_ID, password=DEMO_PASSWORD)
    plain, _ = identity.create_token(email, name="demo")
    click.echo(f"\nDemo user: {email} (password {DEMO_PASSWORD})\nToken: {plain}\n\nTry it:\n")
    click.echo(
        f"  TOKEN={plain}\n"
        f"  THREAD=$(curl -s -X POST {base_url}/api/v1/ai/threads -H \"Authorization: Bearer $TOKEN\" "
        f"-H 'Content-Type: application/json' -d '{{\"title\": \"Demo\"}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"id\"])')\n"
        f"  curl -s -X POST \"{base_url}/api/v1/ai/threads/$THREAD/messages?wait=10\" -H \"Authorization: Bearer $TOKEN\" "
        f"-H 'Content-Type: application/json' -d '{{\"content\": \"Hello!\"}}'\n"
    )
