"""Issue 15, the API side, through the real stack: login limits and their storage, password checks that
do not tell which emails exist and do not block the event loop, a /readyz that a flood cannot turn into
a flood of database connections, and the session-cookie rules (cookies only for chats, same-origin
writes, logout with the nonce, a nonce is no bearer token), 415 for non-JSON bodies, the docs UI
served without a CDN, and the token and user commands.

Limits need their own numbers, so those tests run a second API process (gunicorn, the mode's profile)
on the session's database with small limits and ``TRUSTED_PROXIES=1``: each test then speaks from
addresses of its own through ``X-Forwarded-For``, which is also how ProxyFix is tested end to end.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import random
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from devtools.stack import ROOT, Stack, free_port
from tests.dialects import login

pytestmark = pytest.mark.core


def fresh_ip() -> str:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def fresh_email() -> str:
    return f"nobody-{uuid.uuid4().hex[:12]}@example.com"


def chats_error(response: httpx.Response, status: int) -> dict:
    """The chats dialect's error format (NestJS style), and nothing of a traceback."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["statusCode"] == status and isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in response.text
    return body


def api_only(stack: Stack, **overrides: str) -> Stack:
    """A second API process (one gunicorn worker, so in-memory limits in embedded mode count in one
    place) on the session stack's database; no worker, beat or model: login needs none of them."""
    extra = Stack(mode=stack.mode, DATABASE_URL=stack.database_url, **overrides)
    try:
        extra.start_api(workers=1)
    except Exception:
        print(extra.logs())
        extra.stop()
        raise
    return extra


@pytest.fixture(scope="module")
def limited(stack):
    extra = api_only(stack, TRUSTED_PROXIES="1", RATE_LIMIT_DEFAULT="8/minute", RATE_LIMIT_LOGIN="100/minute",
                     RATE_LIMIT_LOGIN_IP="5/minute", RATE_LIMIT_LOGIN_GLOBAL="30/minute")
    yield extra
    extra.stop()


def attempt(api: Stack, email: str, password: str, ip: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{api.api_url}/api/auth/login", json={"email": email, "password": password},
                      headers={"X-Forwarded-For": ip, **headers}, timeout=30)


# -- login limits ---------------------------------------------------------------------------------

def test_one_address_cannot_try_passwords_across_many_emails(limited, make_user):
    """Before: only a per-email limit, so one address could guess across any number of accounts."""
    ip = fresh_ip()
    statuses = [attempt(limited, fresh_email(), "guess", ip).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    victim = make_user()
    refused = attempt(limited, victim.email, victim.password, ip)
    chats_error(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0
    assert attempt(limited, victim.email, victim.password, fresh_ip()).status_code == 200  # others are not affected


def test_the_default_limit_still_counts_login_requests(limited, make_user):
    """The login route's own limits are added to the default limit (RATE_LIMIT_DEFAULT, 8/minute on this
    API), not put in its place. The default counts per credential when one is sent: one bearer token
    from nine addresses never trips a per-address limit, only the default one."""
    caller = make_user()
    bearer = {"Authorization": f"Bearer {caller.token}"}
    statuses = [attempt(limited, fresh_email(), "guess", fresh_ip(), **bearer).status_code for _ in range(9)]
    assert statuses == [401] * 8 + [429]


def test_forwarded_addresses_count_only_behind_a_trusted_proxy(stack, limited):
    """With TRUSTED_PROXIES=1 the per-address limit keys on X-Forwarded-For (above); with the default
    0 the header is ignored, so a client cannot pick a new address per request: the session stack keys
    every request from this test on 127.0.0.1 (the X-RateLimit headers show one shrinking bucket)."""
    if stack.mode != "production":
        pytest.skip("in-memory limits are per API process in embedded mode; tests/unit/test_security_settings.py "
                    "checks the default in process")
    remaining = []
    for _ in range(3):
        response = httpx.get(f"{stack.api_url}/api/chats", headers={"X-Forwarded-For": fresh_ip()}, timeout=30)
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert remaining[0] > remaining[1] > remaining[2]


def test_logins_in_total_are_capped(limited, make_user):
    """RATE_LIMIT_LOGIN_GLOBAL (30/minute on this API): many addresses, each guessing once at a new
    email, still run into one cap. Runs last in this module: it uses up the API's login budget."""
    statuses = []
    for _ in range(31):
        statuses.append(attempt(limited, fresh_email(), "guess", fresh_ip()).status_code)
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401}, statuses
    victim = make_user()
    chats_error(attempt(limited, victim.email, victim.password, fresh_ip()), 429)


@pytest.fixture(scope="module")
def without_limiter_storage(stack):
    if stack.mode != "production":
        pytest.skip("the embedded mode keeps its limits in memory: there is no storage to lose")
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    extra = api_only(stack, REDIS_URL=dead, CELERY_BROKER_URL=dead)
    yield extra
    extra.stop()


def test_login_fails_closed_when_the_limiter_storage_is_down(without_limiter_storage, make_user):
    """Before: the limiter swallowed the storage error and login ran without any limit."""
    user = make_user()
    response = httpx.post(f"{without_limiter_storage.api_url}/api/auth/login",
                          json={"email": user.email, "password": user.password}, timeout=30)
    body = chats_error(response, 503)
    assert body["error"] == "Service Unavailable" and "logging in" in body["message"].lower()
    assert response.headers["Retry-After"] == "5" and "set-cookie" not in response.headers
    # everything else keeps serving (the limiter lets it through, as before)
    chats = httpx.get(f"{without_limiter_storage.api_url}/api/chats",
                      headers={"Authorization": f"Bearer {user.token}"}, timeout=30)
    assert chats.status_code == 200, chats.text


def test_a_deeply_nested_login_body_is_a_clear_400_without_a_logged_traceback(stack, client_for):
    """End to end: a 400 naming the problem and no traceback in the API's log. (With today's order the
    body guard answers before the route's limits parse the body; test_the_login_limit_key_never_raises
    below covers the key function itself, whatever the order.)"""
    log = stack.processes["api"].log_path
    seen = log.stat().st_size
    body = '{"email": ' + "[" * 5000 + "]" * 5000 + ', "password": "x"}'
    response = client_for().post("/api/auth/login", content=body, headers={"Content-Type": "application/json"})
    chats_error(response, 400)
    assert "nested too deeply" in response.json()["message"]
    client_for().get("/healthz")  # a request after it, so its log lines are written
    with open(log, "rb") as handle:
        handle.seek(seen)
        written = handle.read().decode(errors="replace")
    assert "Traceback" not in written and "Swallowing error" not in written, written[-2000:]


def test_the_login_limit_key_never_raises():
    """The per-email key function must be safe on its own, whatever order the limiter and the body guard
    run in: a body too deep for the JSON parser, not JSON, or without a string email keys on the client's
    address (before: RecursionError, which flask-limiter logs with a traceback and then skips the limit)."""
    from flask import Flask

    from api.dialects.chats.routes import login_key

    app = Flask("key")
    bodies = ['{"email": ' + "[" * 5000 + "]" * 5000 + "}", "not json", '{"email": 5}', "[]"]
    for body in bodies:
        with app.test_request_context("/api/auth/login", method="POST", data=body, content_type="application/json",
                                      environ_base={"REMOTE_ADDR": "192.0.2.1"}):
            assert login_key() == "login-ip:192.0.2.1"
    with app.test_request_context("/api/auth/login", method="POST", json={"email": " Ada@Example.com "}):
        assert login_key() == "login:ada@example.com"


# -- password checks --------------------------------------------------------------------------------

def test_unknown_and_known_emails_cost_the_same_password_hash(stack, make_user, monkeypatch):
    """No timing-based account enumeration: an unknown email, a user without a password and a wrong
    password each run exactly one password check, against a hash of the same method and cost (the
    dummy hash for the first two). Asserted on the calls, not on a clock."""
    from shared.errors import Unauthorized
    from shared.services import identity

    user = make_user()
    identity.create_user(passwordless := fresh_email(), f"tenant-{uuid.uuid4().hex[:8]}")
    checks: list[str] = []
    real = identity.check_password_hash

    def spy(stored: str, password: str) -> bool:
        checks.append(stored.split("$", 1)[0])  # the method and its cost, e.g. scrypt:32768:8:1
        return real(stored, password)

    monkeypatch.setattr(identity, "check_password_hash", spy)
    for email in (fresh_email(), passwordless, user.email):
        with pytest.raises(Unauthorized, match="Invalid email or password"):
            identity.authenticate_password(email, "wrong password")
    assert len(checks) == 3 and len(set(checks)) == 1, checks
    checks.clear()
    assert identity.authenticate_password(user.email, user.password).user_id == user.id
    assert len(checks) == 1


def test_the_password_hash_runs_off_the_gevent_hub(stack, make_user):
    """Under gevent (the production API) scrypt runs in the hub's thread pool: another greenlet keeps
    running while three password checks are under way. Before, the hub stopped for each hash, so the
    ticker below did not run at all until they were done."""
    user = make_user()
    script = textwrap.dedent(f"""
        from gevent import monkey
        monkey.patch_all()
        import gevent
        from shared.errors import Unauthorized
        from shared.services import identity

        identity.dummy_password_hash()  # made once per process, before measuring
        ticks = [0]
        def ticker():
            while True:
                ticks[0] += 1
                gevent.sleep(0.001)
        gevent.spawn(ticker)
        gevent.sleep(0.01)
        before = ticks[0]
        for email in ({user.email!r}, "nobody@example.com", {user.email!r}):
            try:
                identity.authenticate_password(email, "wrong password")
            except Unauthorized:
                pass
        print("ticks", ticks[0] - before)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    ticks = int(done.stdout.split("ticks")[-1])
    assert ticks >= 3, f"the hub was blocked while hashing ({ticks} ticks)"


# -- /readyz ----------------------------------------------------------------------------------------

async def _probe(host: str, port: int) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /readyz HTTP/1.1\r\nHost: threadline\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return int(answer.split(b" ", 2)[1])


async def _flood(url: str, count: int) -> list:
    parts = urlsplit(url)
    return await asyncio.gather(*(asyncio.wait_for(_probe(parts.hostname, parts.port), 120) for _ in range(count)),
                                return_exceptions=True)


def test_a_flood_of_readiness_probes_leaves_database_connections_bounded(stack):
    """2,000 concurrent unauthenticated probes. Before: each opened its own PostgreSQL connection (and
    Redis client), so a flood took hundreds of the server's connections. Now the result is cached for a
    second and computed by one request at a time per process on a pool of one connection."""
    if stack.mode != "production":
        pytest.skip("PostgreSQL only (the embedded mode has no connection limit to exhaust)")
    # AUTOCOMMIT: pg_stat_* views are a snapshot per transaction, so every sample is its own.
    admin = create_engine(stack.pg_admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    active = text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db")
    sessions = text("SELECT sessions FROM pg_stat_database WHERE datname = :db")  # connections ever opened
    with admin.connect() as conn:
        count = lambda: conn.execute(active, {"db": stack.db_name}).scalar_one()  # noqa: E731
        httpx.get(f"{stack.api_url}/readyz", timeout=30)  # probe connections exist before the baseline
        baseline, opened_before = count(), conn.execute(sessions, {"db": stack.db_name}).scalar_one()
        peak, stop = [baseline], threading.Event()

        def sample():
            while not stop.is_set():
                peak.append(count())
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            started = time.monotonic()
            # A thread of its own: the browser tests' Playwright (sync API) keeps an event loop running on
            # the main thread for the whole session, where asyncio.run() refuses to start another.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                results = pool.submit(asyncio.run, _flood(stack.api_url, 2000)).result()
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            sampler.join()
        opened = conn.execute(sessions, {"db": stack.db_name}).scalar_one() - opened_before
    admin.dispose()
    failures = [r for r in results if not isinstance(r, int)]
    assert not failures, f"{len(failures)} probes failed, e.g. {failures[0]!r}"
    assert set(results) == {200}, {status: results.count(status) for status in set(results)}
    # two API processes hold at most one probe connection each; a little room for the worker and beat
    assert max(peak) <= baseline + 6, f"peak {max(peak)} connections vs {baseline} before ({len(peak)} samples)"
    assert opened <= 6, f"{opened} connections were opened and closed during the flood"
    print(f"2000 probes in {elapsed:.1f}s; PostgreSQL connections: {baseline} before, peak {max(peak)} "
          f"({len(peak)} samples), {opened} sessions ended during the flood")


# -- session cookies --------------------------------------------------------------------------------

def _session_of(stack: Stack, client: httpx.Client) -> dict:
    """The signed session cookie's content (the test knows the stack's SECRET_KEY)."""
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    app = Flask("reader")
    app.secret_key = stack.env["SECRET_KEY"]
    return SecureCookieSessionInterface().get_signing_serializer(app).loads(client.cookies["session"])


def _signed_cookie(stack: Stack, data: dict) -> str:
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    app = Flask("signer")
    app.secret_key = stack.env["SECRET_KEY"]
    return SecureCookieSessionInterface().get_signing_serializer(app).dumps(data)


def test_a_session_nonce_is_not_a_bearer_token(stack, client_for, user):
    """Before: ``Bearer session:<nonce>`` hashed to the stored session row and authenticated."""
    browser = login(client_for, user)
    nonce = _session_of(stack, browser)["nonce"]
    for prefix in ("session:", ""):
        response = client_for().get("/api/v1/ai/threads", headers={"Authorization": f"Bearer {prefix}{nonce}"})
        assert response.status_code == 401, response.text
    assert browser.get("/api/chats").status_code == 200  # the cookie itself still works


def test_cookies_authenticate_only_the_chats_dialect(client_for, user):
    browser = login(client_for, user)
    thread = browser.post("/api/chats", json={"title": "cookie scope"})
    assert thread.status_code == 201, thread.text
    chat = thread.json()["data"]["id"]
    assert browser.get("/api/chats").status_code == 200
    for path in ("/api/v1/ai/threads", f"/v1/threads/{chat}/messages"):
        response = browser.get(path)
        assert response.status_code == 401, f"{path}: {response.status_code} {response.text[:200]}"
    assert browser.post("/v1/threads", json={"title": "x"}).status_code == 401
    assert client_for(user).get("/api/v1/ai/threads").status_code == 200  # the bearer token works everywhere


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}])
def test_cross_site_cookie_writes_are_refused(stack, client_for, user, headers):
    browser = login(client_for, user)
    chats_error(browser.post("/api/chats", json={"title": "csrf"}, headers=headers), 403)
    assert browser.get("/api/chats", headers=headers).status_code == 200  # reads are not writes
    chats_error(client_for().post("/api/auth/login", json={"email": user.email, "password": user.password},
                                  headers=headers), 403)  # no login posted by another site either
    # a bearer token is never sent by a browser on its own: no origin check
    assert client_for(user).post("/api/chats", json={"title": "token"}, headers=headers).status_code == 201


@pytest.mark.parametrize("headers", [{}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, "own origin"])
def test_same_origin_cookie_writes_pass(stack, client_for, user, headers):
    if headers == "own origin":
        headers = {"Origin": stack.api_url}
    browser = login(client_for, user)
    assert browser.post("/api/chats", json={"title": "ok"}, headers=headers).status_code == 201


def test_logout_needs_the_sessions_own_nonce(stack, client_for, user):
    """Before: logout revoked whatever session id the (signed) cookie named, nonce or not."""
    browser = login(client_for, user)
    session = _session_of(stack, browser)
    forged = _signed_cookie(stack, {**session, "nonce": "not-the-nonce"})
    with httpx.Client(base_url=stack.api_url, cookies={"session": forged}) as other:
        assert other.post("/api/auth/logout").status_code == 204  # logout stays idempotent
    assert browser.get("/api/chats").status_code == 200  # ... and ended nothing
    assert browser.post("/api/auth/logout").status_code == 204
    assert browser.get("/api/chats").status_code == 401


# -- bodies -----------------------------------------------------------------------------------------

def _targets(client) -> list[tuple[str, str, callable]]:
    thread = client.post("/api/v1/ai/threads", json={"title": "media types"}).json()
    return [
        ("ai-threads", f"/api/v1/ai/threads/{thread['id']}/messages?wait=0",
         lambda body: isinstance(body.get("message"), str) and body.get("code") == "unsupported_media_type"),
        ("chats", f"/api/chats/{thread['uuid']}/messages?wait=0",
         lambda body: body.get("statusCode") == 415 and body.get("error") == "Unsupported Media Type"),
        ("v1-threads", f"/v1/threads/{thread['uuid']}/user_message?wait=0",
         lambda body: isinstance(body.get("detail"), str) and "JSON" in body["detail"]),  # FastAPI's non-422 shape
    ]


@pytest.mark.parametrize("content_type, raw", [("text/plain", b'{"content": "hi"}'),
                                               ("application/x-www-form-urlencoded", b"content=hi"),
                                               (None, b'{"content": "hi"}')])
def test_non_json_bodies_are_415_in_each_dialects_format(client, content_type, raw):
    """Before: a form or text body was read as ``{}`` (and answered as a missing field)."""
    headers = {"Content-Type": content_type} if content_type else {}
    for name, path, dialect_format in _targets(client):
        response = client.post(path, content=raw, headers=headers)
        assert response.status_code == 415, f"{name}: {response.status_code} {response.text[:300]}"
        assert dialect_format(response.json()), f"{name}: {response.text[:300]}"
    chats_error(client.post("/api/auth/login", content=b"email=a&password=b",
                            headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)


# -- the docs UI ------------------------------------------------------------------------------------

def test_the_docs_ui_loads_its_assets_from_this_server(client_for):
    """Before: /docs loaded an unpinned Swagger UI from a CDN (a blank page without internet)."""
    client = client_for()
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text and "https://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        assert f"/docs/assets/{asset}" in page.text
        response = client.get(f"/docs/assets/{asset}")
        assert response.status_code == 200 and len(response.content) > 10_000, asset
    assert client.get("/docs/assets/VERSION").text.startswith("v5.")  # Swagger UI 5 renders OpenAPI 3.1
    assert client.get("/docs/assets/../flask_swagger_ui.py").status_code == 404
    assert client.get("/docs/assets/index.template.html").status_code == 404  # only the listed files


# -- the token and user commands ---------------------------------------------------------------------

@pytest.fixture
def cli(stack):
    from api import create_app

    runner = create_app().test_cli_runner()
    return lambda *args, input=None: runner.invoke(args=list(args), input=input)


def test_tokens_create_prints_the_id_and_list_and_revoke_use_it(cli, make_user, client_for):
    owner = make_user()
    created = cli("tokens", "create", owner.email, "--name", "laptop")
    assert created.exit_code == 0, created.output
    first, plain = created.output.strip().splitlines()[-2:]
    token_id = first.removeprefix("token id: ")
    assert str(uuid.UUID(token_id)) == token_id and plain.startswith("tl_")
    listed = cli("tokens", "list", "--email", owner.email)
    assert listed.exit_code == 0 and token_id in listed.output and "laptop" in listed.output
    assert plain not in listed.output and plain[10:] not in listed.output
    with httpx.Client(base_url=client_for().base_url, headers={"Authorization": f"Bearer {plain}"}) as http:
        assert http.get("/api/v1/ai/threads").status_code == 200
        revoked = cli("tokens", "revoke", token_id)
        assert revoked.exit_code == 0, revoked.output
        assert http.get("/api/v1/ai/threads").status_code == 401
    assert "revoked" in cli("tokens", "list", "--email", owner.email).output


@pytest.mark.parametrize("token_id, message", [(str(uuid.uuid4()), "No API token"), ("not-a-uuid", "not a token id")])
def test_tokens_revoke_fails_on_an_unknown_or_malformed_id(cli, token_id, message):
    result = cli("tokens", "revoke", token_id)
    assert result.exit_code != 0 and message in result.output, result.output


def test_tokens_revoke_does_not_take_a_login_session(cli, stack, client_for, user):
    browser = login(client_for, user)
    result = cli("tokens", "revoke", _session_of(stack, browser)["sid"])
    assert result.exit_code != 0 and "No API token" in result.output
    assert browser.get("/api/chats").status_code == 200


def test_users_create_takes_the_password_from_a_prompt_or_stdin_not_argv(cli, client_for):
    for args, given in ((["--password"], "s3cret-pw\ns3cret-pw\n"), (["--password-stdin"], "s3cret-pw\n")):
        email = fresh_email()
        result = cli("users", "create", email, "--tenant", f"t-{uuid.uuid4().hex[:6]}", *args, input=given)
        assert result.exit_code == 0, result.output
        assert "s3cret-pw" not in result.output
        assert client_for().post("/api/auth/login", json={"email": email, "password": "s3cret-pw"}).status_code == 200
    in_argv = cli("users", "create", fresh_email(), "--tenant", "t", "--password", "s3cret-pw")
    assert in_argv.exit_code != 0  # the flag takes no value: a password on the command line is refused


# -- query_data under a read-only role --------------------------------------------------------------

def test_data_views_can_run_under_a_role_that_may_only_read(stack, client, user, monkeypatch):
    """DATA_VIEWS_DATABASE_URL: the views connect as a role granted SELECT and nothing else, so even a
    view whose SQL tried to write would be refused by PostgreSQL twice (the role, and the READ ONLY
    transaction every view runs in)."""
    if stack.mode != "production":
        pytest.skip("PostgreSQL roles")
    import dataclasses

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ProgrammingError

    from shared.services import data_views

    role = f"threadline_views_{stack.tag}"
    admin = create_engine(stack.database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'GRANT CONNECT ON DATABASE "{stack.db_name}" TO "{role}"'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
        conn.execute(text(f'GRANT SELECT ON threads, messages TO "{role}"'))
    try:
        assert client.post("/api/v1/ai/threads", json={"title": "read by a read-only role"}).status_code == 201
        url = make_url(stack.database_url).set(username=role).render_as_string(hide_password=False)
        monkeypatch.setattr(data_views, "settings", dataclasses.replace(data_views.settings, data_views_database_url=url))
        monkeypatch.setattr(data_views, "_views_engine", None)
        result = data_views.run_view("my_threads", {}, tenant_id=user.tenant_id, user_id=user.id)
        assert [row["title"] for row in result["rows"]] == ["read by a read-only role"]
        engine = data_views.views_engine()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar_one() == role
            with pytest.raises(ProgrammingError, match="permission denied"):
                conn.execute(text("UPDATE threads SET title = 'x'"))
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()
