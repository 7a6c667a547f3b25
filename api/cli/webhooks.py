"""``flask webhooks create|list|delete|deliveries``: a tenant's webhook subscriptions and their deliveries."""
from __future__ import annotations

import click
from flask.cli import AppGroup

from api.cli.common import service_errors, split_list
from shared.models import DeliveryStatus, WebhookEvent
from shared.services import webhooks

command = AppGroup("webhooks", help="Manage webhook subscriptions (signed POSTs when runs end).")
EVENTS = ", ".join(str(e) for e in WebhookEvent)


@command.command("create")
@click.option("--tenant", required=True, help="The tenant whose runs are reported.")
@click.option("--url", required=True, help="Where to POST (http or https; checked by the SSRF guard at each send).")
@click.option("--events", help=f"Comma-separated, of: {EVENTS} (default: all).")
@click.option("--secret", help="whsec_… signing secret (default: a new one, printed once).")
def create(tenant, url, events, secret):
    """Subscribe a URL; prints the subscription id and its signing secret."""
    with service_errors():
        subscription = webhooks.create_subscription(tenant, url, split_list(events), secret)
    click.echo(f"id: {subscription.id}")
    click.echo(f"secret: {subscription.secret}")


@command.command("list")
@click.option("--tenant", required=True)
def list_(tenant):
    """The tenant's subscriptions (secrets are not shown)."""
    with service_errors():
        for s in webhooks.list_subscriptions(tenant):
            click.echo(f"{s.id}  {s.url}  {','.join(s.events)}  created {s.created_at:%Y-%m-%d %H:%M}")


@command.command("delete")
@click.argument("subscription_id", type=click.UUID)
def delete(subscription_id):
    """Delete a subscription (and its delivery records)."""
    with service_errors():
        webhooks.delete_subscription(subscription_id)
    click.echo("deleted")


@command.command("deliveries")
@click.option("--tenant", required=True)
@click.option("--status", type=click.Choice([str(s) for s in DeliveryStatus]))
@click.option("--limit", type=click.IntRange(1, 1000), default=50)
def deliveries(tenant, status, limit):
    """The newest deliveries: status, attempts, last HTTP status and error."""
    with service_errors():
        for d in webhooks.list_deliveries(tenant, status, limit):
            click.echo(f"{d.id}  {d.event}  {d.status}  attempts={d.attempts}  "
                       f"last={d.last_status_code or '-'}  {d.last_error or ''}  {d.created_at:%Y-%m-%d %H:%M:%S}")
