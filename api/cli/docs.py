"""``flask docs ingest|list``: the knowledge base the docs tools search."""
from __future__ import annotations

from pathlib import Path

import click
from flask.cli import AppGroup

from api.cli.common import service_errors
from shared.services import knowledge

command = AppGroup("docs", help="Manage the knowledge base the docs tools search.")


@command.command("ingest")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--tenant", help="Tenant name; without it the documents are global (every tenant reads them).")
def ingest_docs(path, tenant):
    """Ingest a .md/.markdown/.txt file or a folder (recursively). Unchanged files are skipped."""

    def progress(files):
        with click.progressbar(files, label="Ingesting", item_show_func=lambda f: f.name if f else "") as bar:
            yield from bar

    with service_errors():
        summary = knowledge.ingest(path, tenant_id=knowledge.tenant_id_for(tenant), progress=progress)
    for failed, why in summary.failed.items():
        click.echo(f"failed: {failed}: {why}", err=True)
    click.echo(summary.line())


@command.command("list")
@click.option("--tenant", help="Only this tenant's documents.")
@click.option("--global", "only_global", is_flag=True, help="Only the global documents.")
def list_docs(tenant, only_global):
    """List documents with their current version and chunk count."""
    with service_errors():
        tenant_id = knowledge.tenant_id_for(tenant)
    rows = knowledge.list_documents(tenant_id, only_tenant=bool(tenant or only_global))
    for row in rows:
        click.echo(f"{row.tenant or '(global)':<20} v{row.version:<3} {row.chunks:>4} chunks  {row.path}  {row.name}")
    click.echo(f"{len(rows)} document(s)")
