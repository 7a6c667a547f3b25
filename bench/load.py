"""Load generator, run as its own process so its CPU is not the API's: N concurrent clients, each on its
own thread of conversation, posting for a bounded time. Prints one JSON object with every latency and
when each answer completed (seconds from the start).

    python -m bench.load --url http://127.0.0.1:8000 --plan plan.json --clients 32 --duration 10 --wait 30
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
    headers = {"Authorization": f"Bearer {target['token']}", "Prefer": f"wait={args.wait}"}
    url = f"/api/v1/ai/threads/{target['thread']}/messages"
    # One small client per simulated user: a single shared pool scans all its connections on every
    # request, which at 256+ clients cost the load generator more CPU than the service it measures.
    async with httpx.AsyncClient(base_url=args.url, timeout=args.wait + 60, verify=tls) as http:
        await _post_until(http, url, headers, args, stop_at, out)


async def _post_until(http: httpx.AsyncClient, url: str, headers: dict, args, stop_at: float, out: dict) -> None:
    sent = 0
    while time.monotonic() < stop_at and (args.max_per_client == 0 or sent < args.max_per_client):
        started = time.monotonic()
        try:
            response = await http.post(url, json={"content": f"bench message {sent}"}, headers=headers)
            elapsed = time.monotonic() - started
            if response.status_code != 201:
                out["errors"].append(f"HTTP {response.status_code}")
            else:
                status = response.json()["responseMessage"]["status"]
                if args.wait > 0 and status != "completed":
                    out["errors"].append(f"not completed: {status}")
                else:
                    out["latencies"].append(elapsed)
                    out["completed_at"].append(time.monotonic() - out["started"])
        except Exception as exc:  # noqa: BLE001 - every failure is a data point
            out["errors"].append(type(exc).__name__)
        sent += 1
        if args.pace:
            await asyncio.sleep(max(0.0, args.pace - (time.monotonic() - started)))


async def main_async(args) -> dict:
    plan = json.loads(open(args.plan).read())[: args.clients]
    if len(plan) < args.clients:
        raise SystemExit(f"plan has {len(plan)} threads, need {args.clients}")
    out: dict = {"latencies": [], "completed_at": [], "errors": []}
    started = out["started"] = time.monotonic()
    stop_at = started + args.duration
    tls = ssl.create_default_context()  # one for all clients: building one per client costs ~10 ms each
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
    parser.add_argument("--wait", type=float, default=30)
    parser.add_argument("--max-per-client", type=int, default=0)
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between one client's posts")
    args = parser.parse_args(argv)
    json.dump(asyncio.run(main_async(args)), sys.stdout)


if __name__ == "__main__":
    main()
