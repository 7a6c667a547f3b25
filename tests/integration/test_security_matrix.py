"""Every endpoint of every dialect × every way a caller can be wrong: no credentials, a bad, revoked
or expired token, a token without the permission, another user's thread, another tenant's thread.
Each gets the right 401/403/404 and a body without any of the owner's data. Also: tokens are stored
only as hashes and compared in constant time, the session cookie is HttpOnly (and Secure in
production), and no secret ever reaches the processes' logs.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import text

pytestmark = pytest.mark.core

SECRET_TITLE = f"secret-title-{uuid.uuid4().hex[:8]}"
SECRET_TEXT = f"secret-content-{uuid.uuid4().hex[:8]}"
SECRET_MEMORY = f"secret-memory-{uuid.uuid4().hex[:8]}"
SECRET_REASON = f"secret-reason-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # placeholders: {ai} {uuid} {msg} {report} {mem} (the owner's report and memory)
    body: object = None  # a dict, or a callable(caller) -> dict
    thread_scoped: bool = True

    def url(self, world) -> str:
        return self.path.format(ai=world.ai_thread, uuid=world.public_id, msg=world.answer_id,
                                report=world.report_id, mem=world.memory_id)

    def json(self, caller_id: str):
        return self.body(caller_id) if callable(self.body) else self.body

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ENDPOINTS = [
    Endpoint("POST", "/api/v1/ai/threads", {"title": "mine"}, thread_scoped=False),
    Endpoint("GET", "/api/v1/ai/threads", thread_scoped=False),
    Endpoint("GET", "/api/v1/ai/threads/{ai}"),
    Endpoint("DELETE", "/api/v1/ai/threads/{ai}"),
    Endpoint("POST", "/api/v1/ai/threads/{ai}/messages?wait=0", {"content": "let me in"}),
    Endpoint("GET", "/api/v1/ai/threads/{ai}/messages"),
    Endpoint("GET", "/api/v1/ai/threads/{ai}/messages/{msg}"),
    Endpoint("GET", "/api/v1/ai/threads/{ai}/messages/{msg}/stream"),
    Endpoint("POST", "/api/v1/ai/threads/{ai}/messages/{msg}/cancel"),
    Endpoint("POST", "/api/chats", {"title": "mine"}, thread_scoped=False),
    Endpoint("GET", "/api/chats", thread_scoped=False),
    Endpoint("GET", "/api/chats/{uuid}"),
    Endpoint("POST", "/api/chats/{uuid}/messages?wait=0",
             lambda caller: {"content": "let me in", "modelId": "gpt-4", "userId": caller}),
    Endpoint("GET", "/api/chats/{uuid}/messages"),
    Endpoint("GET", "/api/chats/{uuid}/messages/{msg}"),
    Endpoint("GET", "/api/chats/{uuid}/messages/{msg}/stream"),
    Endpoint("POST", "/api/chats/{uuid}/messages/{msg}/cancel"),
    Endpoint("POST", "/v1/threads", {"title": "mine"}, thread_scoped=False),
    Endpoint("GET", "/v1/threads", thread_scoped=False),
    Endpoint("GET", "/v1/threads/{uuid}"),
    Endpoint("POST", "/v1/threads/{uuid}/messages", {"role": "USER", "content": {"text": "let me in"}}),
    Endpoint("POST", "/v1/threads/{uuid}/user_message?wait=0", {"content": {"text": "let me in"}}),
    Endpoint("GET", "/v1/threads/{uuid}/messages"),
    Endpoint("GET", "/v1/threads/{uuid}/messages/{msg}"),
    Endpoint("GET", "/v1/threads/{uuid}/messages/{msg}/stream"),
    Endpoint("POST", "/v1/threads/{uuid}/messages/{msg}/cancel"),
    # One's own memories: another user's memory id is 404 (thread_scoped: owned by the owner).
    Endpoint("GET", "/api/v1/ai/memories", thread_scoped=False),
    Endpoint("DELETE", "/api/v1/ai/memories/{mem}"),
    Endpoint("GET", "/v1/memories", thread_scoped=False),
    Endpoint("DELETE", "/v1/memories/{mem}"),
    Endpoint("GET", "/api/memories", thread_scoped=False),
    Endpoint("DELETE", "/api/memories/{mem}"),
    # The tenant's reports: moderators only (MODERATED below covers who else is refused how).
    Endpoint("GET", "/api/v1/ai/reports", thread_scoped=False),
    Endpoint("POST", "/api/v1/ai/reports/{report}/resolve", {"note": "let me in"}, thread_scoped=False),
]
MODERATED = [e for e in ENDPOINTS if "/reports" in e.path]
# Any signed-in caller may read these (who am I, the model registry, the tenant's workflow names): no
# permission and no thread, but never without credentials, and never another tenant's data.
SIGNED_IN = [Endpoint("GET", "/api/auth/me", thread_scoped=False), Endpoint("GET", "/api/models", thread_scoped=False),
             Endpoint("GET", "/api/workflows", thread_scoped=False)]
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("POST", "/api/auth/login"), ("POST", "/api/auth/logout")}


def created_tenant_id(person) -> uuid.UUID:
    from shared.services import identity

    return identity.user_by_email(person.email).tenant_id


def _person(tenant: str, perms: list[str] | None = None):
    from shared.services import identity

    email = f"{uuid.uuid4().hex[:12]}@example.com"
    created = identity.create_user(email, tenant, password="pw-secret-123", perms=perms)
    token, row = identity.create_token(email)
    return SimpleNamespace(id=created.id, email=email, token=token, token_id=row.id, password="pw-secret-123")


@pytest.fixture(scope="module")
def world(stack):
    """An owner with a thread full of secrets, a neighbour in the same tenant, a stranger elsewhere,
    and the owner's bad credentials."""
    from shared.services import identity

    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    owner, neighbour = _person(tenant), _person(tenant)
    stranger = _person(f"tenant-{uuid.uuid4().hex[:8]}")
    revoked, revoked_row = identity.create_token(owner.email, name="revoked")
    identity.revoke_token(revoked_row.id)
    expired, _ = identity.create_token(owner.email, name="expired", expires_in=timedelta(seconds=-1))
    powerless, _ = identity.create_token(owner.email, name="no permissions", perms=[])
    # Moderators: one in the owner's tenant (the reports are theirs to see), one elsewhere (they are not).
    moderator, foreign_moderator = _person(tenant, ["moderator"]), _person(f"tenant-{uuid.uuid4().hex[:8]}", ["moderator"])
    narrow, _ = identity.create_token(owner.email, name="post only", perms=["ai_thread_messages.create"])
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {owner.token}"}, timeout=40) as c:
        created = c.post("/v1/threads", json={"title": SECRET_TITLE}).json()
        public_id = created["id"]
        ai_thread = c.get("/api/v1/ai/threads").json()["data"][0]["id"]
        answer = c.post(f"/v1/threads/{public_id}/user_message?wait=20", json={"content": {"text": SECRET_TEXT}}).json()
    from shared.services import memories, reports

    memory = memories.save(created_tenant_id(owner), owner.id, SECRET_MEMORY)
    report = reports.report_thread(tenant_id=created_tenant_id(owner), user_id=owner.id, thread_id=ai_thread,
                                   reason=SECRET_REASON, created_by="user")
    world = SimpleNamespace(owner=owner, neighbour=neighbour, stranger=stranger, ai_thread=ai_thread,
                            public_id=public_id, answer_id=answer["assistant_message"]["id"],
                            bad_tokens={"revoked": revoked, "expired": expired}, powerless=powerless,
                            moderator=moderator, foreign_moderator=foreign_moderator,
                            memory_id=memory.id, report_id=report.id, narrow=narrow, stack=stack)
    world.secrets = [SECRET_TITLE, SECRET_TEXT, SECRET_MEMORY, SECRET_REASON, owner.email, owner.id, owner.token,
                     revoked, expired, powerless, narrow]
    return world


def call(world, endpoint: Endpoint, headers: dict, caller_id: str) -> httpx.Response:
    with httpx.Client(base_url=world.stack.api_url, timeout=40) as client:
        response = client.request(endpoint.method, endpoint.url(world), json=endpoint.json(caller_id), headers=headers)
    if endpoint.method in ("POST", "DELETE") and endpoint.thread_scoped:
        assert_untouched(world)
    return response


def assert_untouched(world) -> None:
    """A refused DELETE or POST left the owner's thread exactly as it was."""
    with httpx.Client(base_url=world.stack.api_url, headers={"Authorization": f"Bearer {world.owner.token}"}) as c:
        thread = c.get(f"/v1/threads/{world.public_id}")
        assert thread.status_code == 200 and thread.json()["title"] == SECRET_TITLE
        texts = [m["content"]["text"] for m in c.get(f"/v1/threads/{world.public_id}/messages").json()["data"]]
        assert len(texts) == 2 and SECRET_TEXT in texts and "let me in" not in texts
        assert [m["content"] for m in c.get("/v1/memories").json()["data"]] == [SECRET_MEMORY]
    with httpx.Client(base_url=world.stack.api_url, headers={"Authorization": f"Bearer {world.moderator.token}"}) as c:
        [report] = c.get("/api/v1/ai/reports").json()["data"]
        assert report["reason"] == SECRET_REASON and report["status"] == "open" and report["resolved_by"] is None


def assert_refused(world, response: httpx.Response, statuses: tuple[int, ...], what: str) -> None:
    assert response.status_code in statuses, f"{what}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json"), what
    for secret in world.secrets:
        assert secret not in response.text, f"{what}: the body leaks {secret!r}"
    assert "Traceback" not in response.text


CREDENTIALS = {
    "no credentials": lambda w: {},
    "not a bearer": lambda w: {"Authorization": f"Basic {w.owner.token}"},
    "empty bearer": lambda w: {"Authorization": "Bearer"},
    "unknown token": lambda w: {"Authorization": "Bearer tl_" + "A" * 43},
    "revoked token": lambda w: {"Authorization": f"Bearer {w.bad_tokens['revoked']}"},
    "expired token": lambda w: {"Authorization": f"Bearer {w.bad_tokens['expired']}"},
    "forged cookie": lambda w: {"Cookie": "session=eyJ1c2VyX2lkIjoiYSJ9.forged.signature"},
}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@pytest.mark.parametrize("case", list(CREDENTIALS))
def test_bad_credentials_are_401(world, endpoint, case):
    response = call(world, endpoint, CREDENTIALS[case](world), world.owner.id)
    assert_refused(world, response, (401,), f"{case} → {endpoint}")
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_a_token_without_the_permission_is_403(world, endpoint):
    response = call(world, endpoint, {"Authorization": f"Bearer {world.powerless}"}, world.owner.id)
    assert_refused(world, response, (403,), f"no permission → {endpoint}")


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.thread_scoped], ids=str)
def test_another_users_thread_is_403_or_404(world, endpoint):
    neighbour = world.neighbour
    response = call(world, endpoint, {"Authorization": f"Bearer {neighbour.token}"}, neighbour.id)
    assert_refused(world, response, (403, 404), f"same tenant, other user → {endpoint}")


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.thread_scoped], ids=str)
def test_another_tenants_thread_does_not_exist(world, endpoint):
    stranger = world.stranger
    response = call(world, endpoint, {"Authorization": f"Bearer {stranger.token}"}, stranger.id)
    assert_refused(world, response, (404,), f"other tenant → {endpoint}")


@pytest.mark.parametrize("endpoint", MODERATED, ids=str)
def test_reports_refuse_everyone_but_the_tenants_moderators(world, endpoint):
    """Users without reports.* (the default role) get 403; a moderator of another tenant gets 404 on the
    owner's report and an empty list: another tenant's reports do not exist for them."""
    response = call(world, endpoint, {"Authorization": f"Bearer {world.neighbour.token}"}, world.neighbour.id)
    assert_refused(world, response, (403,), f"same tenant, no moderator → {endpoint}")
    response = call(world, endpoint, {"Authorization": f"Bearer {world.foreign_moderator.token}"},
                    world.foreign_moderator.id)
    if endpoint.method == "GET":
        assert response.status_code == 200 and response.json()["data"] == [], response.text
    else:
        assert_refused(world, response, (404,), f"other tenant's moderator → {endpoint}")
    assert_untouched(world)


@pytest.mark.parametrize("path", ["/api/v1/ai/threads", "/api/chats", "/v1/threads", "/api/v1/ai/memories",
                                  "/v1/memories", "/api/memories"])
def test_lists_show_only_the_callers_threads(world, path):
    for person in (world.neighbour, world.stranger):
        response = httpx.get(world.stack.api_url + path, headers={"Authorization": f"Bearer {person.token}"})
        assert response.status_code == 200
        assert SECRET_TITLE not in response.text


def test_someone_elses_message_id_through_ones_own_thread_is_404(world):
    with httpx.Client(base_url=world.stack.api_url, headers={"Authorization": f"Bearer {world.neighbour.token}"}) as c:
        own = c.post("/v1/threads", json={"title": "mine"}).json()["id"]
        for path in (f"/v1/threads/{own}/messages/{world.answer_id}", f"/api/chats/{own}/messages/{world.answer_id}",
                     f"/v1/threads/{own}/messages/{world.answer_id}/stream",
                     f"/api/chats/{own}/messages/{world.answer_id}/stream"):
            assert_refused(world, c.get(path), (404,), path)


@pytest.mark.parametrize("endpoint", SIGNED_IN, ids=str)
@pytest.mark.parametrize("case", list(CREDENTIALS))
def test_signed_in_endpoints_want_credentials(world, endpoint, case):
    response = call(world, endpoint, CREDENTIALS[case](world), world.owner.id)
    assert_refused(world, response, (401,), f"{case} → {endpoint}")


@pytest.mark.parametrize("endpoint", SIGNED_IN, ids=str)
def test_signed_in_endpoints_show_only_the_callers_own(world, endpoint):
    """A token without permissions still gets them, but only about its own user and tenant."""
    response = call(world, endpoint, {"Authorization": f"Bearer {world.stranger.token}"}, world.stranger.id)
    assert response.status_code == 200, response.text
    assert not [secret for secret in world.secrets if str(secret) in response.text]


def test_the_matrix_covers_every_endpoint(world):
    spec = httpx.get(world.stack.api_url + "/openapi.json").json()
    listed = {(method.upper(), path) for path, item in spec["paths"].items() for method in item
              if method in ("get", "post", "put", "patch", "delete")}
    covered = {(e.method, e.path.split("?")[0].replace("{ai}", "{thread_id}")) for e in ENDPOINTS + SIGNED_IN}

    def normal(path: str) -> str:  # compare shapes, not parameter names
        import re

        return re.sub(r"\{[^}]+\}", "{}", path)

    missing = {(m, p) for m, p in listed - PUBLIC if (m, normal(p)) not in {(cm, normal(cp)) for cm, cp in covered}}
    assert not missing, f"endpoints without a security matrix row: {sorted(missing)}"


# -- token scopes through the assistant (issue 15) ------------------------------------------------------
# A token holding only ai_thread_messages.create may post into the owner's thread in every dialect, but
# the assistant must not become a way around the 403s above: its answer shows none of the owner's
# threads, messages or memories. The scripted model is told to call each reading tool anyway
# ([[tool!:…]]: even when not offered); the call is refused in dispatch and recorded as a failed step.

AGENT_POSTS = {
    "ai-threads": lambda w, text: (f"/api/v1/ai/threads/{w.agent_ai}/messages?wait=20", {"content": text}),
    "chats": lambda w, text: (f"/api/chats/{w.agent_uuid}/messages?wait=20",
                              {"content": text, "modelId": "gpt-4", "userId": w.owner.id}),
    "v1-threads": lambda w, text: (f"/v1/threads/{w.agent_uuid}/user_message?wait=20", {"content": {"text": text}}),
}
AGENT_CALLS = {
    "memories": ("search_memories", {"query": "secret memory"}, "memories.read"),
    "threads view": ("query_data", {"view": "my_threads"}, "ai_threads.read"),
    "messages view": ("query_data", {"view": "my_recent_messages", "params": {"limit": 50}}, "ai_thread_messages.read"),
    "save memory": ("save_memory", {"content": "remember: obey"}, "memories.read"),
    "delete memory": ("delete_memory", {"query": "secret memory"}, "memories.delete"),
}
READING_TOOLS = {"search_memories", "save_memory", "delete_memory", "query_data"}


@pytest.fixture(scope="module")
def agent_world(world):
    """A second thread of the owner's (the first must stay untouched) and a memory of the owner's."""
    from shared.services import memories

    owner = {"Authorization": f"Bearer {world.owner.token}"}
    with httpx.Client(base_url=world.stack.api_url, headers=owner, timeout=40) as c:
        world.agent_uuid = c.post("/v1/threads", json={"title": "agent rows"}).json()["id"]
        world.agent_ai = next(t["id"] for t in c.get("/api/v1/ai/threads").json()["data"] if t["title"] == "agent rows")
    tenant_id = uuid.UUID(str(_tenant_of(world.owner.id)))
    memories.save(tenant_id, world.owner.id, f"my {SECRET_MEMORY} is kept here")
    world.owner_tenant = tenant_id
    return world


def _tenant_of(user_id: str):
    from shared.db import read
    from shared.models import User

    with read() as session:
        return session.get(User, user_id).tenant_id


ANSWER_ID = {  # where each dialect's POST answer names the assistant message
    "ai-threads": lambda body: body["responseMessage"]["id"],
    "chats": lambda body: body["data"]["response"]["id"],
    "v1-threads": lambda body: body["assistant_message"]["id"],
}


def _post_narrow(world, dialect: str, text: str) -> tuple[httpx.Response, dict]:
    """Post as the narrow token; return the response and the finished answer (with its steps) as the
    owner reads it through v1-threads."""
    from tests.answers import FINISHED, wait_until

    path, body = AGENT_POSTS[dialect](world, text)
    with httpx.Client(base_url=world.stack.api_url, timeout=40) as c:
        response = c.post(path, json=body, headers={"Authorization": f"Bearer {world.narrow}"})
        assert response.status_code in (200, 201), response.text
        url = f"/v1/threads/{world.agent_uuid}/messages/{ANSWER_ID[dialect](response.json())}"
        owner = {"Authorization": f"Bearer {world.owner.token}"}

        def answered():
            message = c.get(url, headers=owner).json()
            return message["status"] in FINISHED and message

        message = wait_until(answered, timeout=60, interval=0.2, what="the narrow token's answer")
        return response, {"content": message["content"]["text"], "steps": message["details"]["steps"]}


@pytest.mark.parametrize("dialect", list(AGENT_POSTS))
def test_a_post_only_token_is_offered_no_reading_tools(agent_world, dialect):
    response, answer = _post_narrow(agent_world, dialect, "[[offered-tools]] what can you do?")
    offered = set(answer["content"].split("Tools offered: ", 1)[1].split(", "))
    assert offered and not offered & READING_TOOLS, answer["content"]
    assert not [s for s in (SECRET_TITLE, SECRET_TEXT, SECRET_MEMORY) if s in response.text + json.dumps(answer)]


@pytest.mark.parametrize("dialect", list(AGENT_POSTS))
@pytest.mark.parametrize("case", list(AGENT_CALLS))
def test_a_post_only_token_reads_nothing_through_the_assistant(agent_world, dialect, case):
    from shared.services import memories

    name, args, lacking = AGENT_CALLS[case]
    response, answer = _post_narrow(agent_world, dialect, f"[[tool!:{name} {json.dumps(args)}]] remember and tell me")
    [step] = [s for s in answer["steps"] if s["kind"] == "tool_call"]
    assert (step["name"], step["status"]) == (name, "failed") and f"lacks the permission {lacking}" in step["output"]
    leaked = [s for s in (SECRET_TITLE, SECRET_TEXT, SECRET_MEMORY) if s in response.text + json.dumps(answer)]
    assert not leaked, f"{dialect} {case}: the answer leaks {leaked}"
    assert sorted(m.content for m in memories.recent(agent_world.owner_tenant, agent_world.owner.id)) == [
        f"my {SECRET_MEMORY} is kept here", SECRET_MEMORY]  # the world's two: nothing saved, nothing deleted


# -- secrets at rest and in the logs ------------------------------------------------------------------

def test_tokens_are_stored_only_as_hashes(world):
    from shared.db import transaction
    from shared.models import ApiToken

    plain_tokens = [world.owner.token, world.neighbour.token, world.powerless, *world.bad_tokens.values()]
    columns = [column.name for column in ApiToken.__table__.columns]
    with transaction() as session:
        rows = session.execute(text(f"SELECT {', '.join(columns)} FROM api_tokens")).all()
    dump = "\n".join(" ".join(str(value) for value in row) for row in rows)
    hashes = {row.token_hash for row in rows}
    for plain in plain_tokens:
        assert plain not in dump and plain[10:] not in dump, "a plain token is stored"
        assert hashlib.sha256(plain.encode()).hexdigest() in hashes


def test_tokens_and_session_nonces_are_compared_in_constant_time(world, monkeypatch):
    import hmac

    from shared.services import identity, sessions

    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(identity.hmac, "compare_digest", spy)
    assert identity.authenticate_token(world.owner.token).user_id == world.owner.id
    assert compared, "authenticate_token must compare with hmac.compare_digest"
    compared.clear()
    session_id, nonce = sessions.open_session(world.owner.id)
    assert sessions.resolve_session(str(session_id), nonce, world.owner.id).user_id == world.owner.id
    assert compared, "resolve_session must compare with hmac.compare_digest"


def test_session_cookie_flags(world, monkeypatch):
    response = httpx.post(world.stack.api_url + "/api/auth/login",
                          json={"email": world.neighbour.email, "password": world.neighbour.password})
    assert response.status_code == 200, response.text
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    # The test stack serves plain HTTP (SESSION_COOKIE_SECURE=false); production (Redis configured)
    # defaults to Secure, and create_app passes the setting to Flask's SESSION_COOKIE_SECURE.
    from shared import config

    monkeypatch.delenv("SESSION_COOKIE_SECURE", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    assert config.load().session_cookie_secure is True


def test_a_logged_out_cookie_no_longer_works(world):
    with httpx.Client(base_url=world.stack.api_url) as browser:
        assert browser.post("/api/auth/login", json={"email": world.owner.email,
                                                     "password": world.owner.password}).status_code == 200
        assert browser.get("/api/chats").status_code == 200
        stolen = dict(browser.cookies)
        assert browser.post("/api/auth/logout").status_code == 204
    replay = httpx.get(world.stack.api_url + "/api/chats", cookies=stolen)
    assert_refused(world, replay, (401,), "a cookie after logout")


def test_no_secret_reaches_the_logs(world):
    """After everything above: neither tokens nor passwords appear in any process log."""
    logs = "\n".join(p.log_path.read_text(errors="replace") for p in world.stack.processes.values()
                     if p.log_path.exists())
    assert logs, "no logs to check"
    tokens = [world.owner.token, world.neighbour.token, world.stranger.token, world.powerless, world.narrow,
              *world.bad_tokens.values()]
    for token in tokens:  # also the part after the stored prefix
        assert token not in logs and token[10:] not in logs, "a token was logged"
    assert world.owner.password not in logs, "a password was logged"
