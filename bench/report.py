"""Turn one benchmark run into a printed table, a JSON file, a markdown summary and a PNG chart.

Every Threadline row stands next to the textbook recipe's (bench/recipe/) from the same run, with the
ratio: ``rate x`` is Threadline's msg/s over the recipe's, ``p50 x`` Threadline's p50 over the
recipe's (below 1 is faster)."""
from __future__ import annotations

import json
from pathlib import Path

TARGETS = """Targets (issue 14, 2-core machine, ratios from the same run): S2 at 32 clients >= 1.0x the recipe's
msg/s (stretch 1.5x); CPU per message, all processes, <= 11 ms (stretch 8); S3 at 256 clients >= 60% of
ideal (stretch 90%), p99 <= 1 s over the model; S1 p50 <= 5x a bare Flask request; S4 5,000 clients
waiting at once on one API host, no errors, memory per waiting client reported. Streaming (issue 12):
p50 first-token overhead <= 50 ms, no errors. Cancel (issue 13): p99 cancel -> stored and -> stream end
<= 500 ms.
msg/s: answers completed while the clients were posting, divided by that window (the tail of answers to
the last posts is not counted as idle time); p50/p99: every answer's latency as its client saw it.
CPU ms/answer: user+system CPU of every process (psutil, sampled each second over the scenario's window,
children included; PostgreSQL: the backends of the bench's databases plus the server's own processes;
Redis: the bench's private server; the load generator's own rusage) divided by the answers completed."""


def _fmt(value, width: int) -> str:
    return f"{'-' if value is None else value:>{width}}"


def table(results: dict) -> str:
    f = results["floor"]
    s = results["scenarios"]
    lines = [
        f"Floor (medians): Redis round trip {f['redis_rtt_ms']} ms | PostgreSQL insert+commit "
        f"{f['pg_insert_commit_ms']} ms | bare Flask request {f['bare_flask_ms']} ms | sum {f['sum_ms']} ms",
        f"File descriptors: RLIMIT_NOFILE {results.get('nofile', ['?'])[0]} for the bench and every process it starts.",
        "",
        f"{'scenario':<28}{'system':<11}{'clients':>8}{'msgs':>7}{'err':>6}{'msg/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPU ms':>8}  ratio / notes",
    ]

    def row(name: str, system: str, r: dict, note: str = "") -> None:
        cpu = (r.get("cpu_ms_per_answer") or {}).get("total")
        lines.append(f"{name:<28}{system:<11}{r['clients']:>8}{r['messages']:>7}{r['errors']:>6}{r['rate_per_s']:>8}"
                     f"{_fmt(r['p50_ms'], 9)}{_fmt(r['p99_ms'], 9)}{_fmt(cpu, 8)}  {note}")

    def pair(name: str, p: dict, note: str = "", cpu: bool = True) -> None:
        t, r = dict(p["threadline"]), dict(p["recipe"])
        if not cpu:
            t["cpu_ms_per_answer"] = r["cpu_ms_per_answer"] = None
        ratio = f"{p['rate_ratio']}x" if p["rate_ratio"] is not None else "- (recipe 0)"
        row(name, "Threadline", t, f"rate {ratio}, p50 {p['p50_ratio']}x the recipe" + (f"; {note}" if note else ""))
        row("", "recipe", r)

    s1 = s.get("1_pollable_post")
    if s1:
        _s1(s1, pair, lines)
    for p in s.get("2_wait_zero_latency", []):
        pair("2 wait, model 0 s", p)
    for p in s.get("3_wait_1s_latency", []):
        pair("3 wait, model 1 s", p, f"{p['of_ideal']:.0%} of ideal, p99 +{p['p99_above_model_ms']} ms over model")
    s4 = s.get("4_waiting")
    if s4:
        row(f"4 {s4['clients']} waiting at once", "Threadline", s4,
            f"{s4['queued_at_peak']} queued and {s4['connections_at_peak']} connections open at the peak; "
            f"API +{s4['api_kb_per_waiting_client']} KB per waiting client")
    m = s["5_memory"]
    if s4 and s4.get("error_kinds"):
        lines.append(f"{'':<28}S4 errors: {s4['error_kinds']}")
    lines.append(f"5 memory: API processes {m['api_process_mb']} MB, worker {m['worker_process_mb']} MB")
    if st := s.get("6_streaming"):
        lines.append(
            f"6 streaming: {st['clients']} clients, {st['answers']} answers, {st['errors']} errors {st['error_kinds'] or ''}; "
            f"first token +{st['first_token_overhead_p50_ms']} ms p50 / +{st['first_token_overhead_p99_ms']} ms p99 over "
            f"the model's {st['first_token_delay_ms']:g} ms; p99 longest gap {st['max_gap_p99_ms']} ms; "
            f"{st['events_per_s']} events/s; {st['cpu_ms_per_answer']['total']} ms CPU per streamed answer")
    if c := s.get("7_cancel"):
        lines.append(
            f"7 cancel: {c['cancels']} cancels by {c['cancel_clients']} clients beside {c['streaming_clients']} streams "
            f"({c['streamed_answers']} answers; {c.get('finished_before_cancel', 0)} answers ended before their cancel), {c['errors']} errors {c['error_kinds'] or ''}; cancel -> stored p50 "
            f"{c['stored_p50_ms']} / p99 {c['stored_p99_ms']} ms; cancel -> run.cancelled on the stream p50 "
            f"{c['stream_end_p50_ms']} / p99 {c['stream_end_p99_ms']} ms")
    lines += ["", "CPU ms per answer, by process:"] + cpu_table(results)
    for note in results.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _s1(s1: dict, pair, lines: list[str]) -> None:
    pair("1 pollable POST (wait=0)", s1["single_client"],
         f"p50 = {s1['p50_vs_bare_flask']}x bare Flask (recipe {s1['recipe_p50_vs_bare_flask']}x)", cpu=False)
    for p in s1["steps"]:
        pair("1 pollable POST, rate step", p, cpu=False)
    best = s1["max_rate_without_errors"]
    lines.append(f"{'':<28}max rate without errors: Threadline {best['threadline']} msg/s, recipe {best['recipe']} msg/s")


def cpu_rows(results: dict) -> list[tuple[str, dict]]:
    """(label, {role: ms per answer}) for every scenario that measured CPU per answer."""
    s = results["scenarios"]
    rows = []
    for key, name in (("2_wait_zero_latency", "S2"), ("3_wait_1s_latency", "S3")):
        for p in s.get(key, []):
            rows.append((f"{name}@{p['clients']} Threadline", p["threadline"]["cpu_ms_per_answer"]))
            rows.append((f"{name}@{p['clients']} recipe", p["recipe"]["cpu_ms_per_answer"]))
    if s.get("4_waiting"):
        rows.append((f"S4@{s['4_waiting']['clients']} Threadline", s["4_waiting"]["cpu_ms_per_answer"]))
    if s.get("6_streaming"):
        rows.append((f"S6@{s['6_streaming']['clients']} streams", s["6_streaming"]["cpu_ms_per_answer"]))
    return rows


def cpu_table(results: dict) -> list[str]:
    rows = cpu_rows(results)
    roles = sorted({role for _, figures in rows for role in figures if role != "total"}) + ["total"]
    short = {"postgres (backends)": "pg backends", "postgres (server)": "pg server", "load generator": "load gen"}
    lines = [f"{'':<22}" + "".join(f"{short.get(r, r):>12}" for r in roles)]
    for label, figures in rows:
        lines.append(f"{label:<22}" + "".join(_fmt(figures.get(role), 12) for role in roles))
    return lines


def chart(results: dict, path: Path) -> bool:
    """The wait-mode scenarios' latency and throughput; False (no file) when neither ran."""
    if not results["scenarios"].get("2_wait_zero_latency") and not results["scenarios"].get("3_wait_1s_latency"):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in (("2_wait_zero_latency", "model 0 s"), ("3_wait_1s_latency", "model 1 s")):
        rows = results["scenarios"].get(key, [])
        if not rows:
            continue
        clients = [r["clients"] for r in rows]
        for side, style in (("threadline", "-"), ("recipe", ":")):
            name = "Threadline" if side == "threadline" else "recipe"
            lat.plot(clients, [r[side]["p50_ms"] for r in rows], "o" + style, label=f"{name} p50, {label}")
            thr.plot(clients, [r[side]["rate_per_s"] for r in rows], "o" + style, label=f"{name}, {label}")
    lat.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="latency (ms)",
            title="End-to-end latency (wait mode)")
    thr.set(xscale="log", xlabel="concurrent clients", ylabel="messages / s", title="Throughput")
    for ax in (lat, thr):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(results: dict, stem: Path) -> list[Path]:
    json_path, md_path, png_path = stem.with_suffix(".json"), stem.with_suffix(".md"), stem.with_suffix(".png")
    json_path.write_text(json.dumps(results, indent=2))
    charted = chart(results, png_path)
    md_path.write_text(
        f"# Benchmark {results['started_at']}{' (quick)' if results.get('quick') else ''}\n\n```\n{table(results)}\n```\n\n"
        f"{TARGETS}\n" + (f"\n![chart]({png_path.name})\n" if charted else "")
    )
    return [json_path, md_path] + ([png_path] if charted else [])
