"""Turn one benchmark run into a printed table, a JSON file, a markdown summary and a PNG chart."""
from __future__ import annotations

import json
from pathlib import Path

TARGETS = """Targets (issue 6): S2@32 p50 within 3x the floor's round trips and >= 300 msg/s; S3@256 >= 90% of ideal,
no errors, p99 above model latency < 100 ms; S4 no errors and < 100 KB API memory per waiting client;
S1 p50 < 3x a bare Flask request. S6 (issue 12): p50 first-token overhead <= 50 ms, no errors.
msg/s: answers completed while the clients were posting, divided by that window (the tail of answers to
the last posts is not counted as idle time); p50/p99: every answer's latency as its client saw it."""


def table(results: dict) -> str:
    f = results["floor"]
    s = results["scenarios"]
    lines = [
        f"Floor (medians): Redis round trip {f['redis_rtt_ms']} ms | PostgreSQL insert+commit "
        f"{f['pg_insert_commit_ms']} ms | bare Flask request {f['bare_flask_ms']} ms | sum {f['sum_ms']} ms",
        "",
        f"{'scenario':<34}{'clients':>8}{'msgs':>7}{'err':>5}{'msg/s':>9}{'p50 ms':>9}{'p99 ms':>9}  ratio",
    ]

    def row(name: str, r: dict, ratio: str) -> None:
        lines.append(f"{name:<34}{r['clients']:>8}{r['messages']:>7}{r['errors']:>5}{r['rate_per_s']:>9}"
                     f"{r['p50_ms'] or '-':>9}{r['p99_ms'] or '-':>9}  {ratio}")

    s1 = s["1_pollable_post"]
    row("1 pollable POST (wait=0)", s1["single_client"], f"p50 = {s1['p50_vs_bare_flask']}x bare Flask")
    for r in s1["steps"]:
        row("1 pollable POST, rate step", r, "")
    lines.append(f"{'':<34}max rate without errors: {s1['max_rate_without_errors']} msg/s")
    for r in s["2_wait_zero_latency"]:
        row("2 wait, model 0 s", r, f"p50 = {r['p50_vs_floor']}x floor sum (+{r['p50_over_floor_ms']} ms)")
    for r in s["3_wait_1s_latency"]:
        row("3 wait, model 1 s", r, f"{r['of_ideal']:.0%} of ideal, p99 +{r['p99_above_model_ms']} ms over model")
    s4 = s["4_thousand_waiting"]
    row("4 1000 clients waiting (model 10 s)", s4, f"API +{s4['api_kb_per_waiting_client']} KB per waiting client")
    m = s["5_memory"]
    lines.append(f"5 memory: API processes {m['api_process_mb']} MB, worker {m['worker_process_mb']} MB, "
                 f"worker +{m['worker_kb_per_run_in_flight']} KB per run in flight")
    if st := s.get("6_streaming"):
        lines.append(
            f"6 streaming: {st['clients']} clients, {st['answers']} answers, {st['errors']} errors; first token "
            f"+{st['first_token_overhead_p50_ms']} ms p50 / +{st['first_token_overhead_p99_ms']} ms p99 over the "
            f"model's {st['first_token_delay_ms']:g} ms; p99 longest gap {st['max_gap_p99_ms']} ms; "
            f"{st['events_per_s']} events/s; {st['cpu_ms_per_answer']} ms CPU per answer")
    return "\n".join(lines)


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in (("2_wait_zero_latency", "model 0 s"), ("3_wait_1s_latency", "model 1 s")):
        rows = results["scenarios"][key]
        clients = [r["clients"] for r in rows]
        lat.plot(clients, [r["p50_ms"] for r in rows], "o-", label=f"p50, {label}")
        lat.plot(clients, [r["p99_ms"] for r in rows], "s--", label=f"p99, {label}")
        thr.plot(clients, [r["rate_per_s"] for r in rows], "o-", label=f"measured, {label}")
    ideal = results["scenarios"]["3_wait_1s_latency"]
    thr.plot([r["clients"] for r in ideal], [r["ideal_rate_per_s"] for r in ideal], ":", color="gray",
             label="ideal, model 1 s")
    lat.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="latency (ms)",
            title="End-to-end latency (wait mode)")
    thr.set(xscale="log", xlabel="concurrent clients", ylabel="messages / s", title="Throughput")
    for ax in (lat, thr):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict, stem: Path) -> list[Path]:
    json_path, md_path, png_path = stem.with_suffix(".json"), stem.with_suffix(".md"), stem.with_suffix(".png")
    json_path.write_text(json.dumps(results, indent=2))
    chart(results, png_path)
    md_path.write_text(
        f"# Benchmark {results['started_at']}\n\n```\n{table(results)}\n```\n\n{TARGETS}\n\n![chart]({png_path.name})\n"
    )
    return [json_path, md_path, png_path]
