"""``flask reports list|resolve``: a tenant's reports, for an operator without a moderator's token.

The same service as the API's /api/v1/ai/reports (shared/services/reports.py), without a caller:
``resolve`` records the resolver given with ``--by`` (a user's email), or ``operator`` when none is."""
from __future__ import annotations

import click
from flask.cli import AppGroup

from api.cli.common import service_errors
from shared.models import ReportStatus
from shared.services import identity, knowledge
from shared.services import reports

command = AppGroup("reports", help="List and resolve reported conversations (moderation).")
OPERATOR = "operator"


@command.command("list")
@click.option("--tenant", required=True, help="The tenant whose reports to list.")
@click.option("--status", type=click.Choice([str(s) for s in ReportStatus]), help="Only open or only resolved ones.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50)
def list_(tenant, status, limit):
    """Newest first: id, status, time, thread, who reported, reason, excerpt of the user's message."""
    with service_errors():
        items, total = reports.list_page(knowledge.tenant_id_for(tenant), status=status, limit=limit)
    for r in items:
        resolved = f" by {r.resolved_by} {r.resolved_at:%Y-%m-%d %H:%M}" if r.resolved_at else ""
        excerpt = " ".join(r.excerpt.split())[:80]
        click.echo(f"{r.id}  {r.status}{resolved}  {r.created_at:%Y-%m-%d %H:%M}  thread {r.thread_id}  "
                   f"{r.created_by}: {r.reason!r}  “{excerpt}”")
    click.echo(f"{len(items)} of {total} report(s)", err=True)


@command.command("resolve")
@click.argument("report_id")
@click.option("--tenant", required=True, help="The report's tenant.")
@click.option("--by", "by_email", help="The moderator's email (recorded as the resolver; default: operator).")
@click.option("--note", help="What was done (kept with the resolution).")
def resolve(report_id, tenant, by_email, note):
    """Resolve a report (idempotent: resolving it again keeps the first resolution)."""
    with service_errors():
        tenant_id = knowledge.tenant_id_for(tenant)
        resolver = OPERATOR
        if by_email:
            user = identity.user_by_email(by_email)
            if user.tenant_id != tenant_id:
                raise click.ClickException(f"{by_email} is not a user of tenant {tenant}.")
            resolver = user.id
        report = reports.resolve(tenant_id, report_id, resolver=resolver, note=note)
    click.echo(f"{report.id}  {report.status} by {report.resolved_by} at {report.resolved_at:%Y-%m-%d %H:%M:%S}")
