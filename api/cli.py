"""flask --app api users|tokens|docs|demo … : administration from the command line."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

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

    @app.cli.group()
    def docs():
        """Manage the knowledge base the docs tools search."""

    @docs.command("ingest")
    @click.argument("path", type=click.Path(exists=True, path_type=Path))
    @click.option("--tenant", help="Tenant name; without it the documents are global (every tenant reads them).")
    def ingest_docs(path, tenant):
        """Ingest a .md/.markdown/.txt file or a folder (recursively). Unchanged files are skipped."""
        from shared.services import knowledge

        try:
            tenant_id = knowledge.tenant_id_for(tenant)

            def progress(files):
                with click.progressbar(files, label="Ingesting", item_show_func=lambda f: f.name if f else "") as bar:
                    yield from bar

            summary = knowledge.ingest(path, tenant_id=tenant_id, progress=progress)
        except ThreadlineError as exc:
            raise click.ClickException(exc.message) from exc
        for failed, why in summary.failed.items():
            click.echo(f"failed: {failed}: {why}", err=True)
        click.echo(summary.line())

    @docs.command("list")
    @click.option("--tenant", help="Only this tenant's documents.")
    @click.option("--global", "only_global", is_flag=True, help="Only the global documents.")
    def list_docs(tenant, only_global):
        """List documents with their current version and chunk count."""
        from shared.services import knowledge

        try:
            tenant_id = knowledge.tenant_id_for(tenant)
        except ThreadlineError as exc:
            raise click.ClickException(exc.message) from exc
        rows = knowledge.list_documents(tenant_id, only_tenant=bool(tenant or only_global))
        for row in rows:
            click.echo(f"{row.tenant or '(global)':<20} v{row.version:<3} {row.chunks:>4} chunks  {row.path}  {row.name}")
        click.echo(f"{len(rows)} document(s)")

    @app.cli.group()
    def workflows():
        """Manage workflows (a tenant's system prompt, allowed tools and model for runs)."""

    @workflows.command("create")
    @click.argument("name")
    @click.option("--tenant", required=True, help="Tenant name (or id).")
    @click.option("--system-prompt", default="", help="System prompt for runs with this workflow.")
    @click.option("--tools", help="Comma-separated tool names the runs may use (default: all; '' for none).")
    @click.option("--model", "model_id", help="Model id from the registry (default: the thread's or the default).")
    def create_workflow(name, tenant, system_prompt, tools, model_id):
        """Create a workflow and print its id."""
        from shared.services import workflows as workflow_service

        try:
            workflow = workflow_service.create_workflow(
                workflow_service.tenant_id_for(tenant), name, system_prompt=system_prompt,
                tools=_perms(tools), model_id=model_id,
            )
        except ThreadlineError as exc:
            details = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.fields.items())
            raise click.ClickException(f"{exc.message} {details}".strip()) from exc
        click.echo(str(workflow.id))

    @workflows.command("list")
    @click.option("--tenant", required=True, help="Tenant name (or id).")
    def list_workflows(tenant):
        """List a tenant's workflows: id, name, model, tools."""
        from shared.services import workflows as workflow_service

        try:
            rows = workflow_service.list_workflows(workflow_service.tenant_id_for(tenant))
        except ThreadlineError as exc:
            raise click.ClickException(exc.message) from exc
        for w in rows:
            tools_text = "all tools" if w.tools is None else (",".join(w.tools) or "no tools")
            click.echo(f"{w.id}  {w.name}  model={w.model_id or '-'}  {tools_text}")
        click.echo(f"{len(rows)} workflow(s)")

    @workflows.command("delete")
    @click.argument("workflow_id", type=click.UUID)
    @click.option("--tenant", help="Only delete it if it belongs to this tenant.")
    def delete_workflow(workflow_id, tenant):
        """Delete a workflow by id (threads that used it fall back to the defaults)."""
        from shared.services import workflows as workflow_service

        try:
            tenant_id = workflow_service.tenant_id_for(tenant) if tenant else None
            workflow_service.delete_workflow(workflow_id, tenant_id=tenant_id)
        except ThreadlineError as exc:
            raise click.ClickException(exc.message) from exc
        click.echo("deleted")

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
