"""Webhooks through the real stack: a run's end reaches a local receiver as a signed POST (checked here
with an independent Standard Webhooks verification), a receiver that is down gets the delivery on a
retry, and a URL the SSRF guard refuses fails at once. The receiver listens on the port the session's
fetch allow-list names (tests/conftest.py), so the worker's guard lets it through."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devtools.stack import free_port, wait_until
from shared.models import DeliveryStatus
from shared.services import webhooks


class Receiver:
    """A webhook receiver on a fixed port that can be stopped and started again."""

    def __init__(self, port: int):
        self.port, self.received, self.httpd = port, [], None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "Receiver":
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


@pytest.fixture
def receiver(web_ports):
    receiver = Receiver(web_ports["page"])
    yield receiver
    receiver.stop()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification, written from the specification (not with the code under test)."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, sig.split(",", 1)[1]) for sig in headers["webhook-signature"].split())


def post_and_answer(client) -> dict:
    thread = client.post("/api/v1/ai/threads", json={"title": "hooks"}).json()["id"]
    response = client.post(f"/api/v1/ai/threads/{thread}/messages?wait=20", json={"content": "hello"})
    assert response.status_code == 201
    return response.json()["responseMessage"]


def deliveries(user, status=None):
    return webhooks.list_deliveries(user.tenant, status)


def test_a_completed_run_is_posted_signed(user, client, receiver):
    receiver.start()
    subscription = webhooks.create_subscription(user.tenant, receiver.url, ["run.completed"])
    answer = post_and_answer(client)

    headers, body = wait_until(lambda: receiver.received and receiver.received[0], what="the webhook")
    assert verify(subscription.secret, headers, body)
    assert not verify("whsec_" + base64.b64encode(b"another secret, same length!!").decode(), headers, body)
    payload = json.loads(body)
    assert payload["type"] == "run.completed"
    assert payload["data"]["message_id"] == answer["id"] and payload["data"]["status"] == "completed"
    assert "content" not in json.dumps(payload)  # ids only: the receiver reads the answer through the API
    [delivery] = wait_until(lambda: deliveries(user, "delivered"), what="the delivery recorded")
    assert (str(delivery.id), delivery.attempts, delivery.last_status_code) == (headers["webhook-id"], 1, 204)


def test_a_receiver_that_is_down_gets_it_on_a_retry(user, client, receiver):
    webhooks.create_subscription(user.tenant, receiver.url)  # every event
    post_and_answer(client)
    [failed_once] = wait_until(lambda: [d for d in deliveries(user) if d.attempts >= 1], what="a first attempt")
    assert failed_once.status == DeliveryStatus.PENDING and failed_once.last_error == "ConnectError"

    receiver.start()
    [delivered] = wait_until(lambda: deliveries(user, "delivered"), timeout=60, what="delivery on a retry")
    assert delivered.attempts >= 2 and delivered.id == failed_once.id
    assert [h["webhook-id"] for h, _ in receiver.received] == [str(delivered.id)]


def test_a_url_the_guard_refuses_fails_at_once(user, client):
    webhooks.create_subscription(user.tenant, f"http://127.0.0.1:{free_port()}/not-allow-listed")
    post_and_answer(client)
    [failed] = wait_until(lambda: deliveries(user, "failed"), what="the refused delivery")
    assert failed.attempts == 1 and failed.last_error.startswith("refused:")


def test_the_cli_manages_subscriptions(stack, user):
    from api import create_app

    runner = create_app().test_cli_runner()
    created = runner.invoke(args=["webhooks", "create", "--tenant", user.tenant, "--url", "https://example.com/h",
                                  "--events", "run.failed,run.cancelled"])
    assert created.exit_code == 0 and "secret: whsec_" in created.output
    listed = runner.invoke(args=["webhooks", "list", "--tenant", user.tenant])
    assert "https://example.com/h  run.failed,run.cancelled" in listed.output and "whsec_" not in listed.output
    bad = runner.invoke(args=["webhooks", "create", "--tenant", user.tenant, "--url", "ftp://x", "--events", "run.done"])
    assert bad.exit_code == 1 and "Invalid webhook URL" in bad.output
    unknown = runner.invoke(args=["webhooks", "create", "--tenant", user.tenant, "--url", "https://e.com",
                                  "--events", "run.done"])
    assert unknown.exit_code == 1 and "run.done" in unknown.output
    subscription_id = created.output.split()[1]
    assert runner.invoke(args=["webhooks", "delete", subscription_id]).output.strip() == "deleted"
    assert runner.invoke(args=["webhooks", "list", "--tenant", user.tenant]).output == ""


def test_signatures_follow_the_standard_webhooks_test_vector():
    assert webhooks.sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                         b'{"test": 2432232314}') == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
