"""HTTP ↔ shared.services for the v1-threads dialect (seed 004): /v1/threads with UUID ids, messages
created directly or answered by the AI, newest-first pages with a keyset cursor, FastAPI-style errors.

Derived fields (documented in docs/api.md): ``path_part_id`` is the message id, ``parent_path_id`` the
thread id, ``path`` is ``/threads/{thread_id}/messages/{sequence_number}``; roles are upper case.
"""
from __future__ import annotations

import uuid
from datetime import timezone

from flask import url_for
from api.extensions import Blueprint

from api import streaming
from api.auth import current_principal
from api.dialects.common import AnswerHeaders, document_errors, iso, poll_headers
from api.dialects.v1_threads import schemas
from api.errors import Dialect, Problem
from api.extensions import limiter, user_key
from api.waiting import idempotency_key, requested_wait, busy_policy
from shared.config import settings
from shared.models import Message, Run, RunStep, Thread
from shared.services import citations as citation_service
from shared.services import memories as memory_service
from shared.services import messages as message_service
from shared.services import streams as stream_service
from shared.services import threads as thread_service

blp = Blueprint("v1_threads", __name__, url_prefix="/v1/threads", description="v1-threads dialect (seed 004)")

# -- errors: {"detail": [{"loc", "msg", "type"}]} for 422, {"detail": "..."} otherwise ------------------


def render_error(problem: Problem) -> dict:
    if problem.status == 422:
        kind = "json_invalid" if problem.code == "invalid_json" else "value_error"
        detail = [{"loc": list(e.loc), "msg": e.msg, "type": e.type} for e in problem.errors]
        return {"detail": detail or [{"loc": ["body"], "msg": problem.message, "type": kind}]}
    return {"detail": problem.message}


# FastAPI answers every invalid request, malformed JSON included, with 422.
DIALECT = Dialect("v1-threads", ("/v1/",), render_error, statuses={400: 422})

REPLAYED = "Idempotent-Replayed"
E, V = schemas.HTTPError, schemas.HTTPValidationError
ERRORS = {401: (E, "Missing or invalid token"), 403: (E, "Missing permission, or another user's thread"),
          404: (E, "No such thread (or message) for you; another tenant's thread does not exist for you"),
          422: (V, "Validation error: where (loc), what (msg) and which kind (type)"),
          "default": (E, "Any other error")}
WRITE_ERRORS = {**ERRORS, 409: (E, "message_id or Idempotency-Key already used with a different body"),
                429: (E, "Too many requests (see Retry-After)")}

# -- presenting ------------------------------------------------------------------------------------------


def present_thread(thread: Thread) -> dict:
    return dict(id=thread.public_id, tenant_id=thread.tenant_id, user_id=thread.user_id, title=thread.title,
                model_id=thread.model_id, workflow_id=thread.workflow_id, created_at=thread.created_at,
                updated_at=thread.updated_at)


def present_run(run: Run, steps: list[RunStep]) -> dict:
    """A run-produced message's ``details``: the run and each model and tool call it made."""
    return {
        "run_id": str(run.id), "status": run.status, "attempts": run.attempts, "model_id": run.model_id,
        "usage": run.usage,
        "steps": [dict(attempt=s.attempt, index=s.index, kind=s.kind, name=s.name, arguments=s.arguments,
                       output=s.output, status=s.status, usage=s.usage, started_at=iso(s.started_at, "microseconds"),
                       finished_at=iso(s.finished_at, "microseconds")) for s in steps],
    }


def present_messages(items: list[Message], thread_id: uuid.UUID, tenant_id: uuid.UUID, with_details: bool,
                     runs: dict | None = None) -> list[dict]:
    """``runs``: the details already read (a waited answer's, read with it); else read here when wanted."""
    if runs is None:
        runs = message_service.run_details(items) if with_details else {}
    cited = citation_service.enrich(tenant_id, [m.citations for m in items])
    out = []
    for message, citations in zip(items, cited):
        details = None
        if with_details:
            details = present_run(*runs[message.id]) if message.id in runs else message.details
        out.append(dict(
            id=message.id, thread_id=thread_id, path_part_id=message.id, sequence_number=message.seq,
            role=message.role.upper(),
            content=dict(text=message.content, is_error=message.is_error, citations=citations,
                         references=message.references or []),
            details=details, parent_path_id=thread_id, path=f"/threads/{thread_id}/messages/{message.seq}",
            tenant_id=tenant_id, created_at=message.created_at, updated_at=message.updated_at, status=message.status,
        ))
    return out


# -- threads ---------------------------------------------------------------------------------------------


@blp.route("", methods=["POST"])
@blp.arguments(schemas.CreateThreadRequest)
@blp.response(201, schemas.ThreadResponse)
@document_errors(blp, ERRORS)
def create_thread(body):
    """Create a thread (permission ai_threads.create)."""
    thread = thread_service.create_thread(current_principal(), title=body["title"], model_id=body["model_id"],
                                          workflow_id=body["workflow_id"])
    return present_thread(thread)


@blp.route("", methods=["GET"])
@blp.arguments(schemas.ThreadListQuery, location="query")
@blp.response(200, schemas.ThreadListResponse)
@document_errors(blp, ERRORS)
def list_threads(query):
    """The caller's threads, newest first (permission ai_threads.read)."""
    threads, _ = thread_service.list_threads(current_principal(), limit=query["limit"], offset=query["offset"])
    return {"data": [present_thread(t) for t in threads]}


@blp.route("/<thread_id>", methods=["GET"])
@blp.arguments(schemas.ThreadPath, location="path")
@blp.response(200, schemas.ThreadResponse)
@document_errors(blp, ERRORS)
def get_thread(path, **_raw):
    """One thread (permission ai_threads.read)."""
    return present_thread(thread_service.get_thread(current_principal(), path["thread_id"]))


# -- messages --------------------------------------------------------------------------------------------


@blp.route("/<thread_id>/messages", methods=["POST"])
@blp.arguments(schemas.ThreadPath, location="path")
@blp.arguments(schemas.CreateThreadMessageRequest)
@blp.response(201, schemas.ThreadMessageResponse, headers={
    REPLAYED: {"description": "`true` when this message_id was already stored: the answer is the existing "
                              "message, unchanged (the request body is not applied)", "schema": {"type": "string"}}})
@document_errors(blp, {**WRITE_ERRORS, 409: (E, "message_id is already used by a message of another thread")})
def create_message(path, body, **_raw):
    """Create a message directly in a thread, without AI generation (permission ai_thread_messages.create).

    For importing history, system notes or answers produced elsewhere. Use POST …/user_message to
    have the AI answer. With ``message_id`` the call is idempotent (seed 004: "submitting the same
    message_id twice returns the existing message without creating a duplicate"): the same id again
    answers 201 with the stored message and ``Idempotent-Replayed: true``, also when the body differs;
    an id used in another thread is a 409.
    """
    principal, content = current_principal(), body["content"]
    citations = [dict(chunk_id=str(c["chunk_id"]), quote=c["quote"], offset=c["offset"],
                      length=len(c["quote"]) if c["length"] is None else c["length"]) for c in content["citations"]]
    message, created = message_service.create_message(
        principal, path["thread_id"], role=body["role"].lower(), content=content["text"], citations=citations,
        references=content["references"], is_error=content["is_error"], details=body["details"],
        message_id=body["message_id"],
    )
    [presented] = present_messages([message], path["thread_id"], principal.tenant_id, with_details=True)
    return presented, 201, ({} if created else {REPLAYED: "true"})


@blp.route("/<thread_id>/user_message", methods=["POST"])
@limiter.limit(lambda: settings.rate_limit_messages, key_func=user_key)
@blp.arguments(schemas.ThreadPath, location="path")
@blp.arguments(schemas.UserMessageRequest)
@blp.arguments(schemas.V1WaitQuery, location="query")
@blp.arguments(AnswerHeaders, location="headers")
@blp.response(201, schemas.UserMessageResponse,
              headers={"Location": {"description": "Poll URL of the assistant message while it is not finished",
                                    "schema": {"type": "string"}},
                       "Retry-After": {"description": "Seconds before polling", "schema": {"type": "string"}}})
@blp.alt_response(200, schema=schemas.UserMessageResponse, success=True,
                  description="A retry (same message_id or Idempotency-Key and body): the existing exchange")
@document_errors(blp, WRITE_ERRORS)
@blp.doc(**{streaming.STREAMS: True})
def post_user_message(path, body, _query, _headers, **_raw):
    """Post a user message and have the AI answer it (permission ai_thread_messages.create).

    Waits up to ``?wait=`` / ``Prefer: wait=`` seconds. A finished answer comes back in
    ``assistant_message``; otherwise its ``status`` is queued or in_progress and ``Location`` is the
    URL to poll. ``message_id`` (or the ``Idempotency-Key`` header) makes retries safe. With ``Accept:
    text/event-stream`` the answer streams instead (see GET …/messages/{message_id}/stream).
    ``Thread-Busy`` says what happens when the thread is still answering (docs/api.md, Double-texting).
    """
    principal, thread_id = current_principal(), path["thread_id"]
    message_id = body["message_id"]
    wait = requested_wait()
    exchange = message_service.post_user_message(
        principal, thread_id, content=body["content"]["text"], model_id=body["model_id"], message_id=message_id,
        client_message_id=str(message_id) if message_id else idempotency_key(),
        busy_policy=busy_policy(),
    )
    if streaming.wanted():  # Accept: text/event-stream
        user, assistant = present_messages([exchange.request, exchange.response], thread_id, principal.tenant_id, True)
        preface = schemas.UserMessageResponse().dump({"user_message": user, "assistant_message": assistant})
        return streaming.respond(stream_service.StreamTarget(exchange.response.id, exchange.run_id, 0),
                                 _render_for_stream(thread_id), preface=preface,
                                 status=200 if exchange.replayed else 201)
    exchange = message_service.await_response(exchange, wait)
    answered = exchange.run_steps is not None  # the answer's run and steps were read with it: no second read
    runs = ({exchange.response.id: (exchange.run, exchange.run_steps)} if exchange.run else {}) if answered else None
    user, assistant = present_messages([exchange.request, exchange.response], thread_id, principal.tenant_id, True, runs)
    headers = {}
    if not exchange.response.finished:
        headers = poll_headers(url_for("v1_threads.get_message", thread_id=thread_id, message_id=exchange.response.id))
    return {"user_message": user, "assistant_message": assistant}, 200 if exchange.replayed else 201, headers


@blp.route("/<thread_id>/messages", methods=["GET"])
@blp.arguments(schemas.ThreadPath, location="path")
@blp.arguments(schemas.ThreadMessagesQuery, location="query")
@blp.response(200, schemas.ThreadMessageList)
@document_errors(blp, ERRORS)
def list_messages(path, query, **_raw):
    """The thread's messages, newest first (permission ai_thread_messages.read).

    Page with ``limit``/``offset``, or walk back with ``before`` = the last ``created_at`` you got:
    every message has its own ``created_at``, so the cursor neither repeats nor skips a message,
    also while new ones arrive.
    """
    principal = current_principal()
    items, _, _ = message_service.list_messages(
        principal, path["thread_id"], limit=query["limit"], offset=query["offset"],
        before=query["before"].astimezone(timezone.utc) if query["before"] else None,
        newest_first=True, with_steps=False,
    )
    return {"data": present_messages(items, path["thread_id"], principal.tenant_id, query["with_details"])}


@blp.route("/<thread_id>/messages/<message_id>", methods=["GET"])
@blp.arguments(schemas.MessagePath, location="path")
@blp.arguments(schemas.DetailsQuery, location="query")
@blp.response(200, schemas.ThreadMessageResponse)
@document_errors(blp, ERRORS)
def get_message(path, query, **_raw):
    """One message (permission ai_thread_messages.read); poll an answer here until it is finished."""
    principal = current_principal()
    message, _ = message_service.get_message(principal, path["thread_id"], path["message_id"])
    [presented] = present_messages([message], path["thread_id"], principal.tenant_id, query["with_details"])
    return presented


def _render_for_stream(thread_id: uuid.UUID):
    def render(message_id: uuid.UUID) -> dict:
        message, _ = stream_service.stored_answer(message_id)  # permission checked at attach
        [presented] = present_messages([message], thread_id, current_principal().tenant_id, True)
        return schemas.ThreadMessageResponse().dump(presented)
    return render


@blp.route("/<thread_id>/messages/<message_id>/stream", methods=["GET"])
@blp.arguments(schemas.MessagePath, location="path")
@blp.arguments(streaming.StreamQuery, location="query")
@blp.arguments(streaming.StreamHeaders, location="headers")
@blp.response(200, content_type=streaming.EVENT_STREAM, description=streaming.DESCRIPTION)
@document_errors(blp, ERRORS)
def stream_message(path, _query, _headers, **_raw):
    """Attach to the answer stream of an assistant message (server-sent events; permission
    ai_thread_messages.read). ``Last-Event-ID`` (or ``?last_event_id=``) resumes after that event."""
    target = stream_service.target(current_principal(), path["thread_id"], path["message_id"])
    return streaming.respond(target, _render_for_stream(path["thread_id"]), after=streaming.last_event_id())


@blp.route("/<thread_id>/messages/<message_id>/cancel", methods=["POST"])
@blp.arguments(schemas.MessagePath, location="path")
@blp.response(200, schemas.ThreadMessageResponse)
@document_errors(blp, {**ERRORS, 409: (schemas.CancelConflict, "The answer already finished: `data` is the message")})
def cancel_message(path, **_raw):
    """Stop the answer being produced (permission ai_thread_messages.create, your own thread).

    A queued answer never starts; one in progress stops within half a second and keeps the text it
    had, with status ``cancelled`` (tool calls already made stay, listed in ``details.steps``).
    Cancelling a cancelled answer returns it again; a finished one is 409 with the message as
    ``data``. The user message's id names the same answer.
    """
    principal, thread_id = current_principal(), path["thread_id"]
    try:
        message = message_service.cancel_message(principal, thread_id, path["message_id"])
    except message_service.AlreadyFinished as exc:
        [presented] = present_messages([exc.resource], thread_id, principal.tenant_id, True)
        exc.extra = {"data": schemas.ThreadMessageResponse().dump(presented)}
        raise
    [presented] = present_messages([message], thread_id, principal.tenant_id, True)
    return presented


# -- memories: the caller's own (permissions memories.read, memories.delete) -------------------------------

memories_blp = Blueprint("v1_memories", __name__, url_prefix="/v1/memories",
                         description="v1-threads dialect: what the assistant remembers about you")
MEMORY_ERRORS = {**ERRORS, 403: (E, "Missing permission memories.read (listing) or memories.delete (deleting)"),
                 404: (E, "You have no memory with this id")}


@memories_blp.route("", methods=["GET"])
@memories_blp.arguments(schemas.ThreadListQuery, location="query")
@memories_blp.response(200, schemas.MemoryListResponse)
@document_errors(memories_blp, MEMORY_ERRORS)
def list_memories(query):
    """Your memories, newest first (permission memories.read). Only ever the caller's own."""
    items, _ = memory_service.list_own(current_principal(), limit=query["limit"], offset=query["offset"])
    return {"data": items}


@memories_blp.route("/<memory_id>", methods=["DELETE"])
@memories_blp.arguments(schemas.MemoryPath, location="path")
@memories_blp.response(204)
@document_errors(memories_blp, MEMORY_ERRORS)
def delete_memory(path, **_raw):
    """Forget one of your memories (permission memories.delete); another user's memory id is 404."""
    memory_service.delete_own(current_principal(), path["memory_id"])
    return ""
