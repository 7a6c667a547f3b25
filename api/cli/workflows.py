"""``flask workflows create|list|delete``: a tenant's system prompt, allowed tools and model for runs."""
from __future__ import annotations

import click
from flask.cli import AppGroup

from api.cli.common import service_errors, split_list
from shared.services import workflows

command = AppGroup("workflows", help="Manage workflows (a tenant's system prompt, allowed tools and model for runs).")


@command.command("create")
@click.argument("name")
@click.option("--tenant", required=True, help="Tenant name (or id).")
@click.option("--system-prompt", default="", help="System prompt for runs with this workflow.")
@click.option("--tools", help="Comma-separated tool names the runs may use (default: all; '' for none).")
@click.option("--model", "model_id", help="Model id from the registry (default: the thread's or the default).")
def create_workflow(name, tenant, system_prompt, tools, model_id):
    """Create a workflow and print its id."""
    with service_errors():
        workflow = workflows.create_workflow(workflows.tenant_id_for(tenant), name, system_prompt=system_prompt,
                                             tools=split_list(tools), model_id=model_id)
    click.echo(str(workflow.id))


@command.command("list")
@click.option("--tenant", required=True, help="Tenant name (or id).")
def list_workflows(tenant):
    """List a tenant's workflows: id, name, model, tools."""
    with service_errors():
        rows = workflows.list_workflows(workflows.tenant_id_for(tenant))
    for w in rows:
        tools_text = "all tools" if w.tools is None else (",".join(w.tools) or "no tools")
        click.echo(f"{w.id}  {w.name}  model={w.model_id or '-'}  {tools_text}")
    click.echo(f"{len(rows)} workflow(s)")


@command.command("delete")
@click.argument("workflow_id", type=click.UUID)
@click.option("--tenant", help="Only delete it if it belongs to this tenant.")
def delete_workflow(workflow_id, tenant):
    """Delete a workflow by id (threads that used it fall back to the defaults)."""
    with service_errors():
        workflows.delete_workflow(workflow_id, tenant_id=workflows.tenant_id_for(tenant) if tenant else None)
    click.echo("deleted")
