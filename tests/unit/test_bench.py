"""The bench's pure arithmetic: CPU per answer over a window of readings, which PostgreSQL processes
count, and the event-stream line parser the load generator reads answers with."""
from bench import report
from bench.cpu import per_answer_ms, postgres_role, window_seconds
from bench.load import parse_sse_line


def test_window_counts_each_process_from_its_first_reading():
    readings = [
        {"api": {1: 10.0, 2: 5.0}},
        {"api": {1: 11.0, 2: 5.5, 3: 0.2}},  # 3 started inside the window: counts from zero
        {"api": {1: 12.5, 3: 0.7}},  # 2 exited: keeps its last reading (0.5 s)
    ]
    assert window_seconds(readings) == {"api": 2.5 + 0.5 + 0.7}


def test_window_keeps_roles_that_appear_late_and_never_goes_negative():
    readings = [{"workers": {7: 3.0}}, {"workers": {7: 2.0}, "redis": {9: 1.25}}]  # 7: pid reused, lower
    assert window_seconds(readings) == {"workers": 0.0, "redis": 1.25}
    assert window_seconds([]) == {}


def test_per_answer_ms_lists_every_role_and_the_total():
    figures = per_answer_ms({"api": 1.0, "postgres (backends)": 0.5, "load generator": 0.25}, answers=250)
    assert figures == {"api": 4.0, "load generator": 1.0, "postgres (backends)": 2.0, "total": 7.0}
    assert per_answer_ms({"api": 1.0}, answers=0)["total"] == 1000.0  # no answers: per one, not a crash


def test_postgres_processes_are_ours_the_servers_or_someone_elses():
    ours = ("threadline_test_abc", "threadline_recipe_abc")
    assert postgres_role(["postgres: 15/main: postgres threadline_test_abc 127.0.0.1(5123) idle"], ours) \
        == "postgres (backends)"
    assert postgres_role(["postgres: 15/main: postgres threadline_recipe_abc 127.0.0.1(5124) INSERT"], ours) \
        == "postgres (backends)"
    assert postgres_role(["postgres: 15/main: postgres threadline_test_other 127.0.0.1(5125) idle"], ours) is None
    assert postgres_role(["postgres: 15/main: walwriter "], ours) == "postgres (server)"
    assert postgres_role(["/usr/lib/postgresql/15/bin/postgres", "-c", "config_file=x"], ours) == "postgres (server)"


def test_sse_lines_give_the_event_type_then_its_data():
    kind, data = parse_sse_line("event: message.delta", None)
    assert (kind, data) == ("message.delta", None)
    assert parse_sse_line('data: {"text": "hi"}', kind) == ("message.delta", {"text": "hi"})
    assert parse_sse_line("id: 4", kind) == ("message.delta", None)
    assert parse_sse_line(": heartbeat", kind) == ("message.delta", None)
    assert parse_sse_line("retry: 2000", None) == (None, None)


def test_cpu_table_has_one_column_per_process_and_a_total():
    row = {"threadline": {"cpu_ms_per_answer": {"api": 5.0, "total": 5.0}},
           "recipe": {"cpu_ms_per_answer": {"api": 2.0, "workers": 1.0, "total": 3.0}}, "clients": 32}
    lines = report.cpu_table({"scenarios": {"2_wait_zero_latency": [row]}})
    assert lines[0].split() == ["api", "workers", "total"]
    assert lines[1].split() == ["S2@32", "Threadline", "5.0", "-", "5.0"]
    assert lines[2].split() == ["S2@32", "recipe", "2.0", "1.0", "3.0"]
