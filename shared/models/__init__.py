"""SQLAlchemy 2 typed models, one module per aggregate; importing this registers them all."""
from shared.models.base import Base, utcnow
from shared.models.conversation import Message, Thread
from shared.models.events import RunEvent
from shared.models.identity import ApiToken, Tenant, User
from shared.models.knowledge import Document, DocumentChunk, DocumentVersion
from shared.models.memories import Memory
from shared.models.reports import Report, ReportStatus
from shared.models.runs import Run, RunStep
from shared.models.status import ACTIVE_STATUSES, Status, StepStatus
from shared.models.webhooks import DeliveryStatus, WebhookDelivery, WebhookEvent, WebhookSubscription
from shared.models.workflows import Workflow

__all__ = ["Base", "utcnow", "Tenant", "User", "ApiToken", "Thread", "Message", "Run", "RunStep", "RunEvent",
           "Workflow", "Document", "DocumentVersion", "DocumentChunk", "Memory", "Report", "ReportStatus", "Status",
           "StepStatus", "ACTIVE_STATUSES", "WebhookSubscription", "WebhookDelivery", "WebhookEvent",
           "DeliveryStatus"]
