"""Webhooks: signed POSTs to a tenant's URLs when a run ends (run.completed, run.failed, run.cancelled).

- Subscriptions belong to a tenant (``flask --app api webhooks create|list|delete``); each has a URL,
  the events it wants and a secret (``whsec_`` + base64, shown once at creation).
- When a worker ends a run, one delivery row per matching subscription is written with the run's end
  (in its statement on PostgreSQL, ``insert_deliveries_after``; in its transaction elsewhere,
  ``record_run_ended``) and the worker sends a ``deliver_webhook`` task for each after the commit.
- A delivery is signed as the Standard Webhooks specification describes: headers ``webhook-id`` (the
  delivery id, the same on every attempt, so receivers can drop duplicates), ``webhook-timestamp``
  (Unix seconds of this attempt) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
  "{id}.{timestamp}.{body}" keyed with the secret's decoded bytes>``.
- The target goes through the same SSRF guard as the page reader (shared/netguard.py, with its
  ``FETCH_ALLOWLIST``); redirects are not followed. A 2xx answer delivers; anything else is retried
  with exponential backoff (``WEBHOOK_BACKOFF_BASE`` · 2^(n−1), capped at ``WEBHOOK_BACKOFF_MAX``) up to
  ``WEBHOOK_MAX_ATTEMPTS``; a URL the guard refuses fails at once. Every attempt updates the row
  (status, attempts, last status code, last error): ``flask --app api webhooks deliveries`` lists them.
- The payload carries ids and the status, never message content: a receiver reads the answer through
  the API with its own credentials.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from sqlalchemy import String, bindparam, case, func, insert, literal, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from shared import netguard
from shared.config import settings
from shared.db import transaction
from shared.errors import NotFound, ValidationFailed
from shared.models import (DeliveryStatus, Run, Status, Tenant, Thread, WebhookDelivery, WebhookEvent,
                           WebhookSubscription, utcnow)

SECRET_PREFIX = "whsec_"
EVENT_FOR_STATUS = {Status.COMPLETED: WebhookEvent.RUN_COMPLETED, Status.FAILED: WebhookEvent.RUN_FAILED,
                    Status.CANCELLED: WebhookEvent.RUN_CANCELLED}
USER_AGENT = "Threadline-Webhooks/1.0"


# -- subscriptions ----------------------------------------------------------------------------------

def _tenant(session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise NotFound(f"No tenant named {name!r}.")
    return tenant


def create_subscription(tenant_name: str, url: str, events: list[str] | None = None,
                        secret: str | None = None) -> WebhookSubscription:
    """Subscribe a tenant's URL to run events (all three by default); the secret is generated unless given."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed("Invalid webhook URL.", fields={"url": ["An http or https URL."]})
    wanted = list(dict.fromkeys(events or [str(e) for e in WebhookEvent]))
    unknown = [e for e in wanted if e not in {str(x) for x in WebhookEvent}]
    if unknown:
        raise ValidationFailed("Unknown webhook events.", fields={
            "events": [f"Unknown: {', '.join(unknown)}. Use {', '.join(str(e) for e in WebhookEvent)}."]})
    if secret is not None:
        _key(secret)  # refuses a malformed secret now, not at the first delivery
    with transaction() as session:
        subscription = WebhookSubscription(
            tenant_id=_tenant(session, tenant_name).id, url=url, events=wanted,
            secret=secret or SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode())
        session.add(subscription)
        session.flush()
        return subscription


def list_subscriptions(tenant_name: str) -> list[WebhookSubscription]:
    with transaction() as session:
        tenant = _tenant(session, tenant_name)
        return list(session.scalars(select(WebhookSubscription).where(WebhookSubscription.tenant_id == tenant.id)
                                    .order_by(WebhookSubscription.created_at)))


def delete_subscription(subscription_id: uuid.UUID) -> None:
    with transaction() as session:
        subscription = session.get(WebhookSubscription, subscription_id)
        if subscription is None:
            raise NotFound("No such webhook subscription.")
        session.delete(subscription)


def list_deliveries(tenant_name: str, status: str | None = None, limit: int = 50) -> list[WebhookDelivery]:
    """The tenant's newest deliveries, optionally of one status."""
    with transaction() as session:
        tenant = _tenant(session, tenant_name)
        query = (select(WebhookDelivery).join(WebhookSubscription)
                 .where(WebhookSubscription.tenant_id == tenant.id)
                 .order_by(WebhookDelivery.created_at.desc()).limit(limit))
        if status:
            query = query.where(WebhookDelivery.status == DeliveryStatus(status))
        return list(session.scalars(query))


# -- recording and sending --------------------------------------------------------------------------

def record_run_ended(session: Session, run_id: uuid.UUID) -> list[uuid.UUID]:
    """One pending delivery per subscription of the run's tenant that wants its event, written in the
    caller's transaction (the one that ends the run, runs.finish); their ids, for the caller to send
    after it commits. A run still active (or unknown) records nothing. On PostgreSQL the run's end
    writes them in its own statement instead (insert_deliveries_after)."""
    row = session.execute(
        select(Run.status, Run.response_message_id, Run.request_message_id, Thread.public_id, Thread.id,
               Thread.tenant_id)
        .join(Thread, Thread.id == Run.thread_id).where(Run.id == run_id)
    ).first()
    if row is None or (event := EVENT_FOR_STATUS.get(row.status)) is None:
        return []
    subscriptions = session.scalars(
        select(WebhookSubscription).where(WebhookSubscription.tenant_id == row.tenant_id)).all()
    wanted = [s for s in subscriptions if str(event) in (s.events or [])]
    if not wanted:
        return []
    payload = {"type": str(event), "timestamp": utcnow().isoformat(), "data": {
        "run_id": str(run_id), "status": str(row.status), "thread_id": str(row.public_id),
        "thread_number": row.id, "message_id": str(row.response_message_id),
        "request_message_id": str(row.request_message_id), "tenant_id": str(row.tenant_id)}}
    deliveries = [WebhookDelivery(subscription_id=s.id, event=str(event), payload=payload) for s in wanted]
    session.add_all(deliveries)
    session.flush()
    return [d.id for d in deliveries]


def insert_deliveries_after(ended):
    """PostgreSQL: record_run_ended as an INSERT for a CTE of the statement that ends the run
    (runs._build_finish_in_one_statement), so the deliveries are written atomically with the run's end
    and cost no round trip of their own (most tenants subscribe to nothing: then it inserts no row).
    ``ended`` returns the run's id, status, thread_id, request_message_id and response_message_id; the
    payload's timestamp is the ``webhook_timestamp`` parameter (ISO 8601, as record_run_ended writes it)."""
    threads, subscriptions = Thread.__table__, WebhookSubscription.__table__
    event = case({status: str(event) for status, event in EVENT_FOR_STATUS.items()}, value=ended.c.status)
    payload = func.jsonb_build_object(
        "type", event, "timestamp", bindparam("webhook_timestamp", type_=String()),
        "data", func.jsonb_build_object(
            "run_id", ended.c.id, "status", ended.c.status, "thread_id", threads.c.public_id,
            "thread_number", threads.c.id, "message_id", ended.c.response_message_id,
            "request_message_id", ended.c.request_message_id, "tenant_id", threads.c.tenant_id))
    now = bindparam("webhook_now", type_=WebhookDelivery.__table__.c.created_at.type)
    rows = (
        select(func.gen_random_uuid(), subscriptions.c.id, event, payload, literal(str(DeliveryStatus.PENDING)),
               literal(0), now, now)
        .select_from(ended)
        .join(threads, threads.c.id == ended.c.thread_id)
        .join(subscriptions, subscriptions.c.tenant_id == threads.c.tenant_id)
        .where(type_coerce(subscriptions.c.events, JSONB).contains(func.jsonb_build_array(event)))
    )
    return (insert(WebhookDelivery.__table__)
            .from_select(["id", "subscription_id", "event", "payload", "status", "attempts", "created_at",
                          "updated_at"], rows, include_defaults=False)
            .returning(WebhookDelivery.__table__.c.id))


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        raise ValidationFailed("Invalid webhook secret.", fields={
            "secret": ["whsec_ followed by base64, as Standard Webhooks secrets are."]}) from None


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt (Standard Webhooks, v1)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones."""
    return min(settings.webhook_backoff_max, settings.webhook_backoff_base * 2 ** max(0, attempts - 1))


@dataclass
class Attempt:
    """What ``attempt`` did: ``retry_in`` seconds when another attempt is due, else None."""

    status: DeliveryStatus
    attempts: int
    retry_in: float | None = None


def attempt(delivery_id: uuid.UUID) -> Attempt | None:
    """Send one attempt of a pending delivery and record it; None when there is nothing to send
    (delivered already — a duplicate task — or deleted with its subscription)."""
    with transaction() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.status != DeliveryStatus.PENDING:
            return None
        subscription = session.get(WebhookSubscription, delivery.subscription_id)
        url, secret, payload = subscription.url, subscription.secret, delivery.payload
    body = json.dumps(payload, separators=(",", ":")).encode()
    status_code, error, permanent = None, None, False
    try:
        target = netguard.check_url(url)
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "Host": target.host_header,
                   "webhook-id": str(delivery_id), "webhook-timestamp": str(timestamp),
                   "webhook-signature": sign(secret, str(delivery_id), timestamp, body)}
        with httpx.Client(trust_env=False, follow_redirects=False, timeout=settings.webhook_timeout) as client:
            response = client.post(target.pinned_url, content=body, headers=headers,
                                   extensions={"sni_hostname": target.host})
        status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except netguard.Blocked as exc:
        error, permanent = f"refused: {exc}", True
    except (netguard.FetchError, httpx.HTTPError) as exc:
        error = type(exc).__name__ if isinstance(exc, httpx.HTTPError) else str(exc)
    with transaction() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.status != DeliveryStatus.PENDING:
            return None
        delivery.attempts += 1
        delivery.last_status_code, delivery.last_error, delivery.updated_at = status_code, error, utcnow()
        if error is None:
            delivery.status, delivery.delivered_at = DeliveryStatus.DELIVERED, utcnow()
        elif permanent or delivery.attempts >= settings.webhook_max_attempts:
            delivery.status = DeliveryStatus.FAILED
        retry_in = backoff(delivery.attempts) if delivery.status == DeliveryStatus.PENDING else None
        return Attempt(delivery.status, delivery.attempts, retry_in)
