"""The embedded broker under concurrent producers: every message arrives, whole, exactly once.

kombu's own filesystem transport fails this test (issue 10): its ``_put`` creates the file and only then
writes it, so the consumer sometimes reads an empty file and ``drain_events`` raises ``JSONDecodeError``
(which stops a Celery worker). Run the test against it to see the race:

    BROKER_RACE_TRANSPORT=kombu.transport.filesystem:Transport pytest tests/unit/test_broker_race.py

Producers are separate processes (as the API's gunicorn workers are), the consumer is this process.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Queue

TRANSPORT = os.environ.get("BROKER_RACE_TRANSPORT", "shared.broker:FileTransport")
PRODUCERS, PER_PRODUCER = 4, 1000
QUEUE = "runs"


def options(root: Path) -> dict:
    return dict(data_folder_in=str(root / "queue"), data_folder_out=str(root / "queue"),
                control_folder=str(root / "control"), claimed_folder=str(root / "claimed"),
                dead_letter_folder=str(root / "dead-letter"), store_processed=False, polling_interval=0.001)


def connection(root: Path) -> Connection:
    return Connection("filesystem://", transport=TRANSPORT, transport_options=options(root))


def produce(root: Path, producer: int, rates) -> None:
    with connection(root) as conn:
        publisher = conn.Producer(serializer="json")
        started = time.monotonic()
        for n in range(PER_PRODUCER):
            publisher.publish({"producer": producer, "n": n}, exchange="", routing_key=QUEUE)
        rates.put(PER_PRODUCER / (time.monotonic() - started))


def consume(root: Path, expected: int, until_idle: float = 10.0) -> tuple[list, list[str]]:
    """Drain the queue until ``expected`` bodies arrived or nothing came for ``until_idle`` seconds."""
    bodies, errors = [], []
    with connection(root) as conn:
        def on_message(body, message):
            bodies.append((body["producer"], body["n"]))
            message.ack()

        with conn.Consumer(Queue(QUEUE, Exchange("", type="direct"), routing_key=QUEUE), callbacks=[on_message],
                           accept=["json"]):
            idle_since = time.monotonic()
            while len(bodies) < expected and time.monotonic() - idle_since < until_idle:
                try:
                    conn.drain_events(timeout=0.5)
                    idle_since = time.monotonic()
                except TimeoutError:
                    pass
                except Exception as exc:  # noqa: BLE001 - what would stop a worker is what this test counts
                    errors.append(f"{type(exc).__name__}: {exc}")
    return bodies, errors


@pytest.fixture
def root(tmp_path):
    for name in ("queue", "control", "claimed", "dead-letter"):
        (tmp_path / name).mkdir()
    return tmp_path


def test_concurrent_producers_lose_nothing_and_hand_out_no_half_written_message(root):
    context = multiprocessing.get_context("spawn")
    rates = context.Queue()
    producers = [context.Process(target=produce, args=(root, p, rates)) for p in range(PRODUCERS)]
    started = time.monotonic()
    for process in producers:
        process.start()
    bodies, errors = consume(root, PRODUCERS * PER_PRODUCER)
    elapsed = time.monotonic() - started
    for process in producers:
        process.join(timeout=30)
    enqueue_rates = [rates.get(timeout=5) for _ in producers]
    print(json.dumps({"transport": TRANSPORT, "messages": len(bodies), "through_per_s": round(len(bodies) / elapsed),
                      "enqueue_per_s_per_producer": [round(r) for r in enqueue_rates]}))

    assert errors == [], errors[:3]
    assert len(bodies) == len(set(bodies)), "a message was delivered twice"
    assert set(bodies) == {(p, n) for p in range(PRODUCERS) for n in range(PER_PRODUCER)}, \
        f"{PRODUCERS * PER_PRODUCER - len(set(bodies))} message(s) lost"
    assert os.listdir(root / "dead-letter") == []
    assert [name for name in os.listdir(root / "queue")] == []
    assert os.listdir(root / "claimed") == []


@pytest.mark.skipif(TRANSPORT != "shared.broker:FileTransport", reason="checks FileTransport's own behaviour")
def test_an_unreadable_file_is_dead_lettered_and_consuming_goes_on(root):
    from shared.broker import FileChannel

    queue = root / "queue"
    # names that sort before any real message, so the good one is consumed after them
    (queue / f"0_a-empty.{QUEUE}.msg").write_bytes(b"")
    (queue / f"0_b-garbage.{QUEUE}.msg").write_bytes(b"\x00\xffnot json")
    (queue / f".0_c-half.{QUEUE}.msg.tmp").write_bytes(b'{"bo')  # a put in progress: never listed
    with connection(root) as conn:
        conn.Producer(serializer="json").publish({"producer": 0, "n": 0}, exchange="", routing_key=QUEUE)
    bodies, errors = consume(root, 1, until_idle=2)

    assert errors == []
    assert bodies == [(0, 0)]
    letters = sorted(os.listdir(root / "dead-letter"))
    assert len(letters) == 2 and all(name.endswith(f".{QUEUE}.json") for name in letters)
    records = [json.loads((root / "dead-letter" / name).read_text()) for name in letters]
    assert {r["identity"] for r in records} == {f"0_a-empty.{QUEUE}.msg", f"0_b-garbage.{QUEUE}.msg"}
    assert all("undecodable envelope" in r["reason"] for r in records)
    assert os.listdir(queue) == [f".0_c-half.{QUEUE}.msg.tmp"]
    with connection(root) as conn:
        channel = conn.default_channel
        assert isinstance(channel, FileChannel) and channel.dead_letter_count(QUEUE) == 2


def test_the_redis_channel_was_copied_from_the_pinned_kombu():
    """RedisChannel._brpop_read and _get are kombu 5.7.0's with the decode guarded; a kombu upgrade must
    re-check them against the new version (and then update this line)."""
    import kombu

    assert kombu.__version__ == "5.7.0"
