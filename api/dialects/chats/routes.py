"""HTTP ↔ shared.services for the chats dialect (seeds 002, 003): /api/chats with UUID chat ids, cookie
sessions from /api/auth/login (bearer tokens work too), NestJS-style errors, every status a 400 when
the input is wrong — a ``chatId`` that is not a UUID included ("Invalid request body or parameters")."""
from __future__ import annotations

import uuid
from http import HTTPStatus

from flask import request, url_for
from api.extensions import Blueprint

from api import auth, streaming
from api.dialects.chats import schemas
from api.dialects.common import AnswerHeaders, document_errors, poll_headers
from api.errors import Dialect, FieldError, Problem, RequestInvalid
from api.extensions import ip_key, limiter, require_enforced_limits, user_key
from api.waiting import idempotency_key, requested_wait, busy_policy
from shared.config import settings
from shared.errors import Forbidden, NotFound
from shared.models import Message, Thread
from shared.services import citations as citation_service
from shared.services import memories as memory_service
from shared.services import messages as message_service
from shared.services import streams as stream_service
from shared.services import threads as thread_service
from shared.services import workflows as workflow_service

auth_blp = Blueprint("chats_auth", __name__, url_prefix="/api/auth",
                     description="Cookie sessions for the chats dialect (seeds 002, 003).")
blp = Blueprint("chats", __name__, url_prefix="/api/chats", description="chats dialect (seeds 002, 003)")
catalog_blp = Blueprint("chats_catalog", __name__, url_prefix="/api",
                        description="What a chats client may choose from (models, the tenant's workflows) and "
                                    "what the assistant remembers about the caller (memories).")

E = schemas.ChatsError
BAD_REQUEST = {400: (E, "Invalid request body or parameters (a chatId that is not a UUID included)")}
UNAUTHORIZED = {401: (E, "Invalid or missing session")}
FORBIDDEN = {403: (E, "Another user's chat, userId not yours, or a missing permission")}
NOT_FOUND = {404: (E, "Chat (or message) does not exist")}
CONFLICT = {409: (E, "Idempotency-Key reused with a different body")}
RATE_LIMITED = {429: (E, "Too many requests (see Retry-After)")}
DEFAULT = {"default": (E, "Any other error, same format")}
READ_ERRORS = {**BAD_REQUEST, **UNAUTHORIZED, **FORBIDDEN, **NOT_FOUND, **DEFAULT}


def render_error(problem: Problem) -> dict:
    body = {"statusCode": problem.status, "error": HTTPStatus(problem.status).phrase, "message": problem.message}
    if problem.errors:
        body["details"] = problem.fields()
    return body


# The seed documents 400 for every invalid body or parameter (an unknown modelId included); services
# name fields in the core's words, this dialect in camelCase.
DIALECT = Dialect(
    "chats", ("/api/chats", "/api/auth/", "/api/models", "/api/workflows", "/api/memories"), render_error,
    statuses={422: 400},
    field_names={"model_id": "modelId", "workflow_id": "workflowId", "user_id": "userId"},
    public_endpoints=frozenset({"chats_auth.login", "chats_auth.logout"}),
    missing_credentials="Invalid or missing session: log in with POST /api/auth/login, or send a bearer token.",
)


def present_chat(thread: Thread) -> dict:
    return dict(id=thread.public_id, title=thread.title, modelId=thread.model_id, workflowId=thread.workflow_id,
                userId=thread.user_id, createdAt=thread.created_at, updatedAt=thread.updated_at)


def present_citation(citation: dict) -> dict:
    return dict(chunkId=citation["chunk_id"], quote=citation["quote"], offset=citation["offset"],
                length=citation["length"], documentId=citation["document_id"], documentName=citation["document_name"],
                documentVersion=citation["document_version"], path=citation["path"])


def present_messages(messages: list[Message], chat_id: uuid.UUID) -> list[dict]:
    """Message resources with their citations resolved (one query for all of them, none if none cite)."""
    cited = citation_service.enrich(auth.current_principal().tenant_id, [m.citations for m in messages])
    return [dict(id=message.id, chatId=chat_id, role=message.role, content=message.content,
                 createdAt=message.created_at, status=message.status,
                 citations=[present_citation(c) for c in citations])
            for message, citations in zip(messages, cited)]


def present_message(message: Message, chat_id: uuid.UUID) -> dict:
    return present_messages([message], chat_id)[0]


def login_key() -> str:
    """The per-email login limit's key. The limiter calls it before any body guard, so it must never
    raise: a body that is not JSON, is nested too deeply (RecursionError) or has no string email falls
    back to the client's address (the per-IP login limit counts it anyway)."""
    try:
        body = request.get_json(silent=True)
    except (RecursionError, ValueError):
        body = None
    email = body.get("email") if isinstance(body, dict) else None
    return f"login:{email.strip().lower()[:320]}" if isinstance(email, str) else f"login-ip:{request.remote_addr}"


def login_global_key() -> str:
    """One bucket for every login to this deployment: a cap on password guessing from many addresses."""
    return "login:all"


# Three login limits besides the default per-address limit (override_defaults=False keeps it): per
# email (RATE_LIMIT_LOGIN), per client address (RATE_LIMIT_LOGIN_IP, across any number of emails) and
# for the whole deployment (RATE_LIMIT_LOGIN_GLOBAL). Each answers 429; without the limiter's storage
# login answers 503 (require_enforced_limits).
@auth_blp.route("/login", methods=["POST"])
@limiter.limit(lambda: settings.rate_limit_login, key_func=login_key, override_defaults=False)
@limiter.limit(lambda: settings.rate_limit_login_ip, key_func=ip_key, override_defaults=False)
@limiter.limit(lambda: settings.rate_limit_login_global, key_func=login_global_key, override_defaults=False)
@auth_blp.arguments(schemas.LoginRequest, error_status_code=400)
@auth_blp.response(200, schemas.UserEnvelope)
@auth_blp.doc(security=[])
@document_errors(auth_blp, {400: (E, "Invalid request body"), 401: (E, "Wrong email or password"),
                            403: (E, "Posted by another site (Origin / Sec-Fetch-Site)"),
                            415: (E, "The body is not JSON"),
                            429: (E, "Too many login attempts for this email, from this address or in total "
                                     "(see Retry-After)"),
                            503: (E, "The rate limiter's storage is unreachable: login is refused meanwhile"),
                            **DEFAULT})
def login(body):
    """Log in with email and password.

    Sets an HTTP-only, SameSite=Lax session cookie (Secure in production) that authenticates the chats
    routes: ``curl -c cookies.txt`` here, then ``curl -b cookies.txt`` for the chats calls.
    """
    require_enforced_limits()
    principal = auth.log_in(body["email"], body["password"])
    return {"data": {"id": principal.user_id, "email": body["email"].strip().lower(), "tenantId": principal.tenant_id}}


@auth_blp.route("/me", methods=["GET"])
@auth_blp.response(200, schemas.MeEnvelope)
@document_errors(auth_blp, {**UNAUTHORIZED, **DEFAULT})
def me():
    """Who the session (or token) is: the ``userId`` to send. The chat page asks this on load to know
    whether to show the login form."""
    principal = auth.current_principal()
    return {"data": {"id": principal.user_id, "tenantId": principal.tenant_id}}


@auth_blp.route("/logout", methods=["POST"])
@auth_blp.response(204)
@auth_blp.doc(security=[])
@document_errors(auth_blp, DEFAULT)
def logout():
    """End the session on the server and clear the cookie (always 204, also without a session)."""
    auth.log_out()
    return ""


@blp.route("", methods=["POST"])
@blp.arguments(schemas.ChatCreate, error_status_code=400)
@blp.response(201, schemas.ChatEnvelope)
@document_errors(blp, {**BAD_REQUEST, **UNAUTHORIZED, **FORBIDDEN, **DEFAULT})
def create_chat(body):
    """Create a chat (permission ai_threads.create)."""
    thread = thread_service.create_thread(auth.current_principal(), title=body["title"], model_id=body["modelId"],
                                          workflow_id=body["workflowId"])
    return {"data": present_chat(thread)}


@blp.route("", methods=["GET"])
@blp.arguments(schemas.ChatsPage, location="query", error_status_code=400)
@blp.response(200, schemas.ChatList)
@document_errors(blp, {**BAD_REQUEST, **UNAUTHORIZED, **FORBIDDEN, **DEFAULT})
def list_chats(query):
    """The caller's chats, newest first (permission ai_threads.read)."""
    threads, total = thread_service.list_threads(auth.current_principal(), limit=query["limit"], offset=query["offset"])
    return {"data": [present_chat(t) for t in threads], "meta": {"total": total, **query}}


@blp.route("/<chatId>", methods=["GET"])
@blp.arguments(schemas.ChatPath, location="path", error_status_code=400)
@blp.response(200, schemas.ChatEnvelope)
@document_errors(blp, READ_ERRORS)
def get_chat(path, **_raw):
    """One chat (permission ai_threads.read)."""
    return {"data": present_chat(thread_service.get_thread(auth.current_principal(), path["chatId"]))}


@blp.route("/<chatId>/messages", methods=["POST"])
@limiter.limit(lambda: settings.rate_limit_messages, key_func=user_key)
@blp.arguments(schemas.ChatPath, location="path", error_status_code=400)
@blp.arguments(schemas.ChatMessageCreate, error_status_code=400)
@blp.arguments(AnswerHeaders, location="headers", error_status_code=400)
@blp.response(201, schemas.PostedEnvelope,
              headers={"Location": {"description": "Poll URL of the response, when it is not finished yet",
                                    "schema": {"type": "string"}},
                       "Retry-After": {"description": "Seconds before polling", "schema": {"type": "string"}}})
@document_errors(blp, {**READ_ERRORS, **CONFLICT, **RATE_LIMITED})
@blp.doc(**{streaming.STREAMS: True})
def post_message(path, body, _headers, **_raw):
    """Create Message: post a user message; the AI assistant answers it (seed 002).

    Waits for the answer up to ``Prefer: wait=N`` seconds (or ``?wait=N``; default and maximum from
    the server's settings). A finished answer comes back in ``response``; otherwise ``response.status``
    is ``queued`` or ``in_progress`` and the ``Location`` header is the URL to poll. Resending with the
    same ``Idempotency-Key`` header returns the same two messages and never starts a second answer.
    With ``Accept: text/event-stream`` the answer streams instead (see GET …/messages/{messageId}/stream).
    ``Thread-Busy`` says what happens when the chat is still answering (docs/api.md, Double-texting).
    """
    principal, chatId = auth.current_principal(), path["chatId"]  # noqa: N806 - the seed's name
    if body["userId"] != principal.user_id:
        raise Forbidden("userId must be the logged-in user.", fields={"userId": ["Not the logged-in user."]})
    wait = requested_wait()
    exchange = message_service.post_user_message(
        principal, chatId, content=body["content"], model_id=body["modelId"], workflow_id=body["workflowId"],
        client_message_id=idempotency_key(), busy_policy=busy_policy(),
    )
    if streaming.wanted():  # Accept: text/event-stream
        data = present_message(exchange.request, chatId)
        data["response"] = present_message(exchange.response, chatId)
        return streaming.respond(stream_service.StreamTarget(exchange.response.id, exchange.run_id, 0),
                                 _render_for_stream(chatId), preface=schemas.PostedEnvelope().dump({"data": data}),
                                 status=201)
    exchange = message_service.await_response(exchange, wait)
    data = present_message(exchange.request, chatId)
    data["response"] = present_message(exchange.response, chatId)
    headers = {}
    if not exchange.response.finished:
        headers = poll_headers(url_for("chats.get_message", chatId=chatId, messageId=exchange.response.id))
    return {"data": data}, 201, headers


@blp.route("/<chatId>/messages", methods=["GET"])
@blp.arguments(schemas.ChatPath, location="path", error_status_code=400)
@blp.arguments(schemas.MessagesPage, location="query", error_status_code=400)
@blp.response(200, schemas.ChatMessageList)
@document_errors(blp, READ_ERRORS)
def list_messages(path, query, **_raw):
    """The chat's messages in conversation order, or newest first with ``order=desc`` (permission
    ai_thread_messages.read). ``before`` (a message id) pages back from a message: the chat page loads
    older messages on scroll with ``?order=desc&before={oldest shown}``."""
    chatId = path["chatId"]  # noqa: N806 - the seed's name
    principal = auth.current_principal()
    before = None
    if query["before"] is not None:
        try:
            before = message_service.get_message(principal, chatId, query["before"])[0].created_at
        except NotFound:
            raise RequestInvalid("before: no such message in this chat.",
                                 FieldError(("query", "before"), "Not a message of this chat.")) from None
    items, total, _ = message_service.list_messages(
        principal, chatId, limit=query["limit"], offset=query["offset"], before=before,
        newest_first=query["order"] == "desc", with_steps=False,
    )
    return {"data": present_messages(items, chatId),
            "meta": {"total": total, "limit": query["limit"], "offset": query["offset"]}}


@blp.route("/<chatId>/messages/<messageId>", methods=["GET"])
@blp.arguments(schemas.MessagePath, location="path", error_status_code=400)
@blp.response(200, schemas.ChatMessageEnvelope)
@document_errors(blp, READ_ERRORS)
def get_message(path, **_raw):
    """One message; poll an answer here until its ``status`` is completed or failed.

    Permission ai_thread_messages.read, or, with only ai_thread_messages.create, the two messages of a
    post you made (its own message and the response you poll for).
    """
    message, _ = message_service.get_message(auth.current_principal(), path["chatId"], path["messageId"])
    return {"data": present_message(message, path["chatId"])}


def _render_for_stream(chat_id: uuid.UUID):
    def render(message_id: uuid.UUID) -> dict:
        message, _ = stream_service.stored_answer(message_id)  # permission checked at attach
        return schemas.ChatMessage().dump(present_message(message, chat_id))
    return render


@blp.route("/<chatId>/messages/<messageId>/stream", methods=["GET"])
@blp.arguments(schemas.MessagePath, location="path", error_status_code=400)
@blp.arguments(streaming.StreamQuery, location="query", error_status_code=400)
@blp.arguments(streaming.StreamHeaders, location="headers", error_status_code=400)
@blp.response(200, content_type=streaming.EVENT_STREAM, description=streaming.DESCRIPTION)
@document_errors(blp, READ_ERRORS)
def stream_message(path, _query, _headers, **_raw):
    """Attach to the answer stream of a response message (server-sent events; the same permission as
    reading it). ``Last-Event-ID`` (or ``?last_event_id=``) resumes after that event."""
    chat_id = path["chatId"]
    target = stream_service.target(auth.current_principal(), chat_id, path["messageId"])
    return streaming.respond(target, _render_for_stream(chat_id), after=streaming.last_event_id())


@blp.route("/<chatId>/messages/<messageId>/cancel", methods=["POST"])
@blp.arguments(schemas.MessagePath, location="path", error_status_code=400)
@blp.response(200, schemas.ChatMessageEnvelope)
@document_errors(blp, {**READ_ERRORS, 409: (schemas.CancelConflict, "The answer already finished: the body's data is the message")})
def cancel_message(path, **_raw):
    """Stop the answer being produced (permission ai_thread_messages.create, your own chat).

    A queued answer never starts; one in progress stops within half a second and keeps the text it
    had, with status ``cancelled``. Cancelling a cancelled answer returns it again; a finished one is
    409 with the message as ``data``. The user message's id names the same answer.
    """
    chat_id = path["chatId"]
    try:
        message = message_service.cancel_message(auth.current_principal(), chat_id, path["messageId"])
    except message_service.AlreadyFinished as exc:
        exc.extra = {"data": schemas.ChatMessage().dump(present_message(exc.resource, chat_id))}
        raise
    return {"data": present_message(message, chat_id)}


@catalog_blp.route("/models", methods=["GET"])
@catalog_blp.response(200, schemas.ModelList)
@document_errors(catalog_blp, {**UNAUTHORIZED, **DEFAULT})
def list_models():
    """The server's model registry: the ``modelId`` values a chat or a message may name (any signed-in
    caller; the chat page's model picker)."""
    auth.current_principal()
    return {"data": [{"id": model_id, "default": model_id == settings.default_model_id}
                     for model_id in sorted(settings.models)]}


@catalog_blp.route("/workflows", methods=["GET"])
@catalog_blp.response(200, schemas.WorkflowList)
@document_errors(catalog_blp, {**UNAUTHORIZED, **DEFAULT})
def list_workflows():
    """Your tenant's workflows by name: the ``workflowId`` values a chat or a message may name (empty
    when the tenant has none; the chat page shows its workflow picker only then)."""
    principal = auth.current_principal()
    return {"data": [dict(id=w.id, name=w.name, modelId=w.model_id)
                     for w in workflow_service.list_workflows(principal.tenant_id)]}


@catalog_blp.route("/memories", methods=["GET"])
@catalog_blp.arguments(schemas.ChatsPage, location="query", error_status_code=400)
@catalog_blp.response(200, schemas.ChatMemoryList)
@document_errors(catalog_blp, {**BAD_REQUEST, **UNAUTHORIZED, 403: (E, "Missing permission memories.read"), **DEFAULT})
def list_memories(query):
    """What the assistant remembers about you, newest first (permission memories.read); only your own."""
    items, total = memory_service.list_own(auth.current_principal(), limit=query["limit"], offset=query["offset"])
    return {"data": items, "meta": {"total": total, **query}}


@catalog_blp.route("/memories/<memoryId>", methods=["DELETE"])
@catalog_blp.arguments(schemas.ChatMemoryPath, location="path", error_status_code=400)
@catalog_blp.response(204)
@document_errors(catalog_blp, {**BAD_REQUEST, **UNAUTHORIZED, 403: (E, "Missing permission memories.delete"),
                               404: (E, "You have no memory with this id"), **DEFAULT})
def delete_memory(path, **_raw):
    """Forget one of your memories (permission memories.delete); another user's memory id is 404."""
    memory_service.delete_own(auth.current_principal(), path["memoryId"])
    return ""
