"""Streaming load generator, run as its own process: N concurrent clients, each on its own thread of
conversation, posting with ``Accept: text/event-stream`` and reading the answer's events until it ends,
for a bounded time. Prints one JSON object: per answer, the time to its first text delta, the longest
gap between two events after it, its number of events; and every error.

    python -m bench.stream_load --url http://127.0.0.1:8000 --plan plan.json --clients 256 --duration 10
"""
from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time

import httpx


async def client_loop(target: dict, args, stop_at: float, out: dict, tls: ssl.SSLContext) -> None:
    headers = {"Authorization": f"Bearer {target['token']}", "Accept": "text/event-stream"}
    url = f"/api/v1/ai/threads/{target['thread']}/messages"
    async with httpx.AsyncClient(base_url=args.url, timeout=120, verify=tls) as http:
        sent = 0
        while time.monotonic() < stop_at and (args.max_per_client == 0 or sent < args.max_per_client):
            try:
                await one_answer(http, url, headers, sent, out)
            except Exception as exc:  # noqa: BLE001 - every failure is a data point
                out["errors"].append(type(exc).__name__)
            sent += 1


async def one_answer(http: httpx.AsyncClient, url: str, headers: dict, sent: int, out: dict) -> None:
    started = time.monotonic()
    first = last = None
    gap = 0.0
    events = 0
    text, final, kind = "", None, None
    async with http.stream("POST", url, json={"content": f"bench stream {sent}"}, headers=headers) as response:
        if response.status_code != 201:
            out["errors"].append(f"HTTP {response.status_code}")
            return
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind is not None:
                now = time.monotonic()
                events += 1
                if kind == "message.delta":
                    text += json.loads(line[6:])["text"]
                    first = first if first is not None else now
                if first is not None and last is not None:
                    gap = max(gap, now - last)
                last = now
                if kind in ("message.completed", "run.failed", "run.cancelled"):
                    final = json.loads(line[6:]) if kind == "message.completed" else None
                    break
    if final is None:
        out["errors"].append(f"ended without message.completed ({kind})")
    elif first is None or text != final["content"]:
        out["errors"].append("deltas do not add up to the answer")
    else:
        out["answers"].append({"first_delta_s": first - started, "max_gap_s": gap, "events": events,
                               "done_at": last - out["started"]})


async def main_async(args) -> dict:
    plan = json.loads(open(args.plan).read())[: args.clients]
    if len(plan) < args.clients:
        raise SystemExit(f"plan has {len(plan)} threads, need {args.clients}")
    out: dict = {"answers": [], "errors": []}
    started = out["started"] = time.monotonic()
    stop_at = started + args.duration
    tls = ssl.create_default_context()
    await asyncio.gather(*(client_loop(target, args, stop_at, out, tls) for target in plan))
    out["elapsed"] = time.monotonic() - started
    out["clients"], out["duration"] = args.clients, args.duration
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--plan", required=True, help="JSON list of {token, thread}")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--max-per-client", type=int, default=0)
    args = parser.parse_args(argv)
    json.dump(asyncio.run(main_async(args)), sys.stdout)


if __name__ == "__main__":
    main()
