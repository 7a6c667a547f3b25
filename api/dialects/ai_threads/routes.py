"""HTTP ↔ shared.services for the ai-threads dialect."""
from __future__ import annotations

import math
import uuid

from flask import url_for
from api.extensions import Blueprint

from api import streaming
from api.auth import current_principal
from api.errors import Dialect, Problem
from api.extensions import limiter, user_key
from api.waiting import idempotency_key, requested_wait, busy_policy
from api.dialects.ai_threads import schemas
from api.dialects.common import AnswerHeaders, document_errors
from shared.config import settings
from shared.models import Message, RunStep, Thread
from shared.services import citations as citation_service
from shared.services import messages as message_service
from shared.services import streams as stream_service
from shared.services import threads as thread_service

blp = Blueprint("ai_threads", __name__, url_prefix="/api/v1/ai/threads", description="ai-threads dialect (seeds 000, 001)")


def render_error(problem: Problem) -> dict:
    body = {"message": problem.message, "code": problem.code}
    if problem.errors:
        body["errors"] = problem.fields()
    return body


# The seed documents 422 for every bad request, malformed JSON included.
DIALECT = Dialect("ai-threads", ("/api/v1/ai/",), render_error, statuses={400: 422})


_E = schemas.AiThreadsError
ERRORS = {401: (_E, "Missing or invalid token"), 403: (_E, "Missing permission, or another user's thread"),
          404: (_E, "No such thread or message"), 422: (_E, "Invalid request: errors names each bad field"),
          "default": (_E, "Any other error")}
WRITE_ERRORS = {**ERRORS, 409: (_E, "Idempotency-Key reused with a different body"),
                429: (_E, "Too many messages (see Retry-After)")}


def present_thread(thread: Thread) -> dict:
    return dict(id=thread.id, uuid=thread.public_id, title=thread.title, model_id=thread.model_id,
                context=thread.context,
                user_id=thread.user_id, flagged=thread.flagged_at is not None,
                created_at=thread.created_at, updated_at=thread.updated_at)


def present_step(step: RunStep) -> dict:
    return dict(index=step.index, kind=step.kind, name=step.name, arguments=step.arguments, output=step.output,
                status=step.status, usage=step.usage, started_at=step.started_at, finished_at=step.finished_at)


def present_messages(messages: list[Message], steps: dict | None = None) -> list[dict]:
    """Messages with their citations enriched at read time (current document names), in one query."""
    enriched = citation_service.enrich(current_principal().tenant_id, [m.citations for m in messages])
    return [present_message(m, (steps or {}).get(m.id), cited) for m, cited in zip(messages, enriched)]


def present_message(message: Message, steps: list[RunStep] | None = None, citations: list | None = None) -> dict:
    body = dict(
        id=message.id, thread_id=message.thread_id, seq=message.seq, role=message.role, content=message.content,
        status=message.status, context=message.context, updated_context=message.updated_context,
        citations=citations if citations is not None else message.citations or [], is_error=message.is_error,
        created_at=message.created_at, updated_at=message.updated_at,
    )
    if message.context_key == "state":
        body.update(state=message.context, updated_state=message.updated_context)
    if message.role == "assistant":
        body["steps"] = [present_step(s) for s in steps or []]
    return body


def page_meta(page: int, per_page: int, total: int) -> dict:
    return dict(current_page=page, per_page=per_page, total=total, last_page=max(1, math.ceil(total / per_page)))


@blp.route("", methods=["POST"])
@blp.arguments(schemas.ThreadCreate)
@blp.response(201, schemas.ThreadResource)
@document_errors(blp, ERRORS)
def create_thread(body):
    """Create a thread (permission ai_threads.create)."""
    thread = thread_service.create_thread(
        current_principal(), title=body["title"], model_id=body["model_id"], context=body["context"],
        workflow_id=body["workflow_id"],
    )
    return present_thread(thread)


@blp.route("", methods=["GET"])
@blp.arguments(schemas.Pagination, location="query")
@blp.response(200, schemas.ThreadList)
@document_errors(blp, ERRORS)
def list_threads(query):
    """The caller's threads, newest first (permission ai_threads.read)."""
    page, per_page = query["page"], query["per_page"]
    threads, total = thread_service.list_threads(current_principal(), limit=per_page, offset=(page - 1) * per_page)
    return {"data": [present_thread(t) for t in threads], "meta": page_meta(page, per_page, total)}


@blp.route("/<int:thread_id>", methods=["GET"])
@blp.response(200, schemas.ThreadResource)
@document_errors(blp, ERRORS)
def get_thread(thread_id: int):
    """One thread (permission ai_threads.read)."""
    return present_thread(thread_service.get_thread(current_principal(), thread_id))


@blp.route("/<int:thread_id>", methods=["DELETE"])
@blp.response(204)
@document_errors(blp, ERRORS)
def delete_thread(thread_id: int):
    """Delete a thread with its messages (permission ai_threads.delete)."""
    thread_service.delete_thread(current_principal(), thread_id)
    return ""


@blp.route("/<int:thread_id>/messages", methods=["POST"])
@limiter.limit(lambda: settings.rate_limit_messages, key_func=user_key)
@blp.arguments(schemas.MessageCreate)
@blp.arguments(schemas.WaitQuery, location="query")
@blp.arguments(AnswerHeaders, location="headers")
@blp.response(201, schemas.MessagePair)
@document_errors(blp, {**WRITE_ERRORS, 409: (_E, "Idempotency-Key reused with a different body, or the thread "
                                                 "is busy and Thread-Busy is reject")})
@blp.doc(**{streaming.STREAMS: True})
def post_message(body, _query, _headers, thread_id: int):
    """Post a user message; answers 201 with the created message and the AI's response message.

    Waits up to ``?wait=`` / ``Prefer: wait=`` seconds for the answer. When it is not ready the response
    message is ``queued`` or ``in_progress``: poll the ``Location`` header's URL. With ``Accept:
    text/event-stream`` the answer streams instead (see GET …/messages/{message_id}/stream).
    ``Thread-Busy`` says what happens when the thread is still answering (docs/api.md, Double-texting).
    """
    # "state": {} is an (empty) state, not an absent one (seed 001): test for None, never for truth
    context_key = "state" if body["state"] is not None else ("context" if body["context"] is not None else None)
    context = body["state"] if body["state"] is not None else body["context"]
    wait = requested_wait()
    exchange = message_service.post_user_message(
        current_principal(), thread_id, content=body["content"], context=context,
        context_key=context_key, client_message_id=idempotency_key(), model_id=body["model_id"],
        workflow_id=body["workflow_id"], busy_policy=busy_policy(),
    )
    if streaming.wanted():  # Accept: text/event-stream
        created, answer = present_messages([exchange.request, exchange.response], {exchange.response.id: []})
        preface = schemas.MessagePair().dump({"createdMessage": created, "responseMessage": answer})
        return streaming.respond(stream_service.StreamTarget(exchange.response.id, exchange.run_id, 0),
                                 _render_for_stream(thread_id), preface=preface, status=201)
    exchange = message_service.await_response(exchange, wait)
    created, answer = present_messages([exchange.request, exchange.response], {exchange.response.id: exchange.steps})
    payload = {"createdMessage": created, "responseMessage": answer}
    headers = {}
    if not exchange.response.finished:
        headers = {
            "Location": url_for("ai_threads.get_message", thread_id=thread_id, message_id=exchange.response.id),
            "Retry-After": "1",
        }
    return payload, 201, headers


@blp.route("/<int:thread_id>/messages", methods=["GET"])
@blp.arguments(schemas.Pagination, location="query")
@blp.response(200, schemas.MessageList)
@document_errors(blp, ERRORS)
def list_messages(query, thread_id: int):
    """The thread's messages in conversation order (permission ai_thread_messages.read)."""
    page, per_page = query["page"], query["per_page"]
    items, total, steps = message_service.list_messages(
        current_principal(), thread_id, limit=per_page, offset=(page - 1) * per_page
    )
    return {"data": present_messages(items, steps), "meta": page_meta(page, per_page, total)}


@blp.route("/<int:thread_id>/messages/<uuid:message_id>", methods=["GET"])
@blp.response(200, schemas.MessageResource)
@document_errors(blp, ERRORS)
def get_message(thread_id: int, message_id: uuid.UUID):
    """One message; poll this until ``status`` is completed or failed.

    Permission ai_thread_messages.read, or, with only ai_thread_messages.create, the two messages of a
    post you made (its own message and the response you poll for).
    """
    message, steps = message_service.get_message(current_principal(), thread_id, message_id)
    return present_messages([message], {message.id: steps})[0]


def _render_for_stream(thread_id: int):
    def render(message_id: uuid.UUID) -> dict:
        message, steps = stream_service.stored_answer(message_id)  # permission checked at attach
        return schemas.MessageResource().dump(present_messages([message], {message.id: steps})[0])
    return render


@blp.route("/<int:thread_id>/messages/<uuid:message_id>/stream", methods=["GET"])
@blp.arguments(streaming.StreamQuery, location="query")
@blp.arguments(streaming.StreamHeaders, location="headers")
@blp.response(200, content_type=streaming.EVENT_STREAM, description=streaming.DESCRIPTION)
@document_errors(blp, ERRORS)
def stream_message(_query, _headers, thread_id: int, message_id: uuid.UUID):
    """Attach to the answer stream of a response message (server-sent events; permission
    ai_thread_messages.read). ``Last-Event-ID`` (or ``?last_event_id=``) resumes after that event;
    an answer that finished long ago streams as one ``message.completed``."""
    target = stream_service.target(current_principal(), thread_id, message_id)
    return streaming.respond(target, _render_for_stream(thread_id), after=streaming.last_event_id())


@blp.route("/<int:thread_id>/messages/<uuid:message_id>/cancel", methods=["POST"])
@blp.response(200, schemas.MessageResource)
@document_errors(blp, {**ERRORS, 409: (schemas.CancelConflict, "The answer already finished: the body's data is the message")})
def cancel_message(thread_id: int, message_id: uuid.UUID):
    """Stop the answer being produced (permission ai_thread_messages.create, your own thread).

    A queued answer never starts; one in progress stops within half a second and keeps the text it
    had, with status ``cancelled`` (tool calls already made stay, listed in ``steps``). Cancelling a
    cancelled answer returns it again; a finished one is 409 with the message as ``data``. The user
    message's id names the same answer.
    """
    try:
        message = message_service.cancel_message(current_principal(), thread_id, message_id)
    except message_service.AlreadyFinished as exc:
        exc.extra = {"data": schemas.MessageResource().dump(_present_with_steps(exc.resource))}
        raise
    return _present_with_steps(message)


def _present_with_steps(message: Message) -> dict:
    _, steps = message_service.get_message(current_principal(), message.thread_id, message.id)
    return present_messages([message], {message.id: steps})[0]
