"""Load generator, run as its own process so its CPU is not the API's: N concurrent clients, each on its
own thread of conversation, posting for a bounded time. Prints one JSON object on stdout (every latency,
when each answer completed, every error, the generator's own CPU seconds) and a progress line on
stderr every ``--progress`` seconds, so a long scenario is never silent.

Three modes share the plan, the clients and the bookkeeping:

- ``wait`` (default): ``POST …/messages`` with ``Prefer: wait=N``; an answer counts when the 201 carries
  the completed response (``--wait 0``: the pollable post, any 201 counts).
- ``stream``: the same post with ``Accept: text/event-stream``, read until the stream ends; per answer
  the time to its first text delta, the longest gap between events after it, its number of events.
- ``--cancel-clients K`` (with ``stream``): the first K clients cancel each answer once its first delta
  arrived (``POST …/messages/{id}/cancel``) and time cancel → 200 with status ``cancelled`` (stored) and
  cancel → ``run.cancelled`` on the stream (stream end); the others stream as above, as the load.

    python -m bench.load --url http://127.0.0.1:8000 --plan plan.json --clients 32 --duration 10 --wait 30
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import sys
import time

import httpx

TERMINAL = ("message.completed", "run.failed", "run.cancelled")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parse_sse_line(line: str, kind: str | None) -> tuple[str | None, dict | None]:
    """One line of an event stream: (the event type now in force, the event's data if this line ends
    one). Pure, so the bench's unit tests can hold it to the format docs/api.md documents."""
    if line.startswith("event: "):
        return line[7:], None
    if line.startswith("data: ") and kind is not None:
        return kind, json.loads(line[6:])
    return kind, None


class Tally:
    """What every client appends to; one per load process."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.latencies: list[float] = []
        self.completed_at: list[float] = []
        self.errors: list[str] = []
        self.answers: list[dict] = []  # stream mode
        self.cancels: list[dict] = []  # cancel clients
        self.finished_first = 0  # cancels that lost the race to the answer's own end (409)
        self.in_flight = 0

    def done(self) -> int:
        return len(self.latencies) + len(self.answers) + len(self.cancels) + self.finished_first

    def progress(self, label: str) -> str:
        return (f"    [{label}] {time.monotonic() - self.started:5.1f} s: {self.done()} done, "
                f"{len(self.errors)} errors, {self.in_flight} in flight")


async def post_wait(http: httpx.AsyncClient, target: dict, args, n: int, tally: Tally) -> None:
    headers = {"Authorization": f"Bearer {target['token']}", "Prefer": f"wait={args.wait}"}
    started = time.monotonic()
    response = await http.post(f"/api/v1/ai/threads/{target['thread']}/messages",
                               json={"content": f"{args.content} {n}"}, headers=headers)
    elapsed = time.monotonic() - started
    if response.status_code != 201:
        tally.errors.append(f"HTTP {response.status_code}")
        return
    status = response.json()["responseMessage"]["status"]
    if args.wait > 0 and status != "completed":
        tally.errors.append(f"not completed: {status}")
        return
    tally.latencies.append(elapsed)
    tally.completed_at.append(time.monotonic() - tally.started)


async def post_stream(http: httpx.AsyncClient, target: dict, args, n: int, tally: Tally, cancel: bool) -> None:
    """One streamed answer; with ``cancel`` the client stops it once the first delta arrived."""
    thread = target["thread"]
    headers = {"Authorization": f"Bearer {target['token']}", "Accept": "text/event-stream"}
    started = time.monotonic()
    first = last = None
    gap = 0.0
    events = 0
    text, final, kind = "", None, None
    response_id = None
    cancel_task: asyncio.Task | None = None
    cancel_sent = None
    async with http.stream("POST", f"/api/v1/ai/threads/{thread}/messages",
                           json={"content": f"{args.content} {n}"}, headers=headers) as response:
        if response.status_code != 201:
            tally.errors.append(f"HTTP {response.status_code}")
            return
        async for line in response.aiter_lines():
            kind, data = parse_sse_line(line, kind)
            if data is None:
                continue
            now = time.monotonic()
            if kind == "message.created":
                response_id = data["responseMessage"]["id"]
                continue
            events += 1
            if kind == "message.delta":
                text += data["text"]
                if first is None:
                    first = now
                    if cancel and response_id:
                        cancel_sent = time.monotonic()
                        cancel_task = _timed(http.post(
                            f"/api/v1/ai/threads/{thread}/messages/{response_id}/cancel",
                            headers={"Authorization": headers["Authorization"]}))
            if first is not None and last is not None:
                gap = max(gap, now - last)
            last = now
            if kind in TERMINAL:
                final = data
                break
    ended = time.monotonic()
    if cancel_task is not None:
        response = await cancel_task
        stored = getattr(cancel_task, "finished_at", None)
        if response.status_code == 200 and response.json()["status"] == "cancelled" and kind == "run.cancelled":
            tally.cancels.append({"stored_s": (stored or ended) - cancel_sent, "stream_end_s": ended - cancel_sent})
        elif response.status_code == 409 or kind == "message.completed":
            tally.finished_first += 1  # the answer ended before the cancel reached it: not a cancel to time
        else:
            tally.errors.append(f"cancel: HTTP {response.status_code}, stream ended with {kind}")
        return
    if kind != "message.completed":
        tally.errors.append(f"ended without message.completed ({kind})")
    elif first is None or text != final["content"]:
        tally.errors.append("deltas do not add up to the answer")
    else:
        tally.answers.append({"first_delta_s": first - started, "max_gap_s": gap, "events": events,
                              "done_at": last - tally.started})


def _timed(coro):
    """A task that records when it finished: the cancel's 200 is when the cancelled answer was stored."""
    async def run():
        result = await coro
        task.finished_at = time.monotonic()
        return result
    task = asyncio.ensure_future(run())
    return task


async def client_loop(index: int, target: dict, args, stop_at: float, tally: Tally, http: httpx.AsyncClient) -> None:
    cancel = index < args.cancel_clients
    if args.ramp:  # clients join one after another over --ramp seconds instead of all in one instant
        await asyncio.sleep(args.ramp * index / args.clients)
    async with http:
        sent = 0
        while time.monotonic() < stop_at and (args.max_per_client == 0 or sent < args.max_per_client):
            started = time.monotonic()
            tally.in_flight += 1
            try:
                if args.mode == "stream":
                    await post_stream(http, target, args, sent, tally, cancel)
                else:
                    await post_wait(http, target, args, sent, tally)
            except Exception as exc:  # noqa: BLE001 - every failure is a data point
                tally.errors.append(type(exc).__name__)
            finally:
                tally.in_flight -= 1
            sent += 1
            if args.pace:
                await asyncio.sleep(max(0.0, args.pace - (time.monotonic() - started)))


async def report_progress(tally: Tally, args) -> None:
    while True:
        await asyncio.sleep(args.progress)
        print(tally.progress(args.label), file=sys.stderr, flush=True)


async def main_async(args) -> dict:
    plan = json.loads(open(args.plan).read())[: args.clients]
    if len(plan) < args.clients:
        raise SystemExit(f"plan has {len(plan)} threads, need {args.clients}")
    cpu_before = own_cpu_seconds()
    tls = ssl.create_default_context()  # one for all clients: building one per client costs ~10 ms each
    # One small client per simulated user: a single shared pool scans all its connections on every
    # request, which at 256+ clients cost the load generator more CPU than the service it measures.
    # All are built before the first request: built as each client starts, thousands of them held the
    # event loop for seconds between a connection's open and its request, and gunicorn's async worker
    # drops a connection whose first request has not arrived within its keep-alive (5 s).
    https = [httpx.AsyncClient(base_url=args.url, timeout=args.wait + 10, verify=tls) for _ in plan]
    tally = Tally()
    stop_at = tally.started + args.duration
    progress = asyncio.create_task(report_progress(tally, args)) if args.progress > 0 else None
    await asyncio.gather(*(client_loop(i, target, args, stop_at, tally, http)
                           for i, (target, http) in enumerate(zip(plan, https))))
    if progress:
        progress.cancel()
    return {
        "latencies": tally.latencies, "completed_at": tally.completed_at, "errors": tally.errors,
        "answers": tally.answers, "cancels": tally.cancels, "finished_first": tally.finished_first,
        "elapsed": time.monotonic() - tally.started, "clients": args.clients, "duration": args.duration,
        "cpu_s": own_cpu_seconds() - cpu_before,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--plan", required=True, help="JSON list of {token, thread}")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--wait", type=float, default=30)
    parser.add_argument("--max-per-client", type=int, default=0)
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between one client's posts")
    parser.add_argument("--mode", choices=("wait", "stream"), default="wait")
    parser.add_argument("--cancel-clients", type=int, default=0, help="stream mode: clients that cancel")
    parser.add_argument("--content", default="bench message", help="the posts' text (a number is appended)")
    parser.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines (0: none)")
    parser.add_argument("--label", default="load")
    parser.add_argument("--ramp", type=float, default=0.0, help="seconds over which the clients start")
    args = parser.parse_args(argv)
    json.dump(asyncio.run(main_async(args)), sys.stdout)


if __name__ == "__main__":
    main()
