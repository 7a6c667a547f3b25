"""The worker's side of streaming, without I/O: assembling SDK chunks into a message, dropping the
citation markers from streamed text, and coalescing deltas into events (with a fake clock)."""
from __future__ import annotations

import random
import time
import uuid

import pytest
from openai.types.chat import ChatCompletionChunk

from shared.config import settings
from shared.events import EventType
from worker.agent.citations import extract
from worker.agent.streaming import CiteFilter, MessageAssembler, RunEvents


def chunk(delta: dict, usage: dict | None = None, choices: bool = True) -> dict:
    """A chunk as the worker gets it (JSON); checked against the SDK's type so the shape is the real one."""
    raw = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": None}] if choices else [], "usage": usage}
    ChatCompletionChunk.model_validate(raw)
    return raw


def test_text_deltas_join_and_usage_is_kept():
    assembler = MessageAssembler()
    pieces = [assembler.add(chunk({"role": "assistant", "content": ""})),
              assembler.add(chunk({"content": "Hel"})), assembler.add(chunk({"content": "lo."})),
              assembler.add(chunk({}, usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                                  choices=False))]
    result = assembler.result()
    assert pieces == ["", "Hel", "lo.", ""]
    assert result.content == "Hello." and result.tool_calls == []
    assert result.usage["total_tokens"] == 5
    assert result.as_message() == {"role": "assistant", "content": "Hello."}


def test_tool_call_deltas_merge_by_index():
    assembler = MessageAssembler()
    for delta in (
        {"role": "assistant", "content": None},
        {"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "search_docs", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "web_search", "arguments": '{"q'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"query": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": '": 1}'}}]},
    ):
        assert assembler.add(chunk(delta)) == ""
    result = assembler.result()
    assert result.content is None
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call_a", "search_docs", '{"query": "x"}'), ("call_b", "web_search", '{"q": 1}')]
    assert result.as_message()["tool_calls"][1] == {
        "id": "call_b", "type": "function", "function": {"name": "web_search", "arguments": '{"q": 1}'}}
    assert "content" not in result.as_message()


@pytest.mark.parametrize("seed", range(25))
def test_cite_filter_matches_the_stored_text_however_the_text_is_cut(seed):
    text = ('See <cite chunk="c1">the quote</cite> and < not a tag, a <b>, '
            '<cite chunk="c2">another one</cite>. Done <ci')
    stored, _ = extract(text, lambda _chunk: None)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(text)), 12))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    f = CiteFilter()
    streamed = "".join(f.feed(p) for p in pieces) + f.finish()
    assert streamed == stored


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def recorder(round_trips: list | None = None):
    """The events written, one by one; ``round_trips`` gets the types and TTL refresh of each call
    (one call is one pipeline on Redis)."""
    written: list[tuple[str, dict, int]] = []

    def append(run_id, items, attempt, *, expire=True):
        if round_trips is not None:
            round_trips.append(([str(t) for t, _ in items], expire))
        written.extend((str(t), data, attempt) for t, data in items)
        return list(range(len(written) - len(items) + 1, len(written) + 1))

    return written, append


def test_deltas_are_coalesced_by_time_and_by_size():
    written, append = recorder()
    clock = Clock()
    run = RunEvents(uuid.uuid4(), 2, lambda: True, clock=clock, append=append)
    run.text("a")  # the first piece goes out at once (first-token latency)
    clock.now += settings.stream_coalesce_seconds / 5
    run.text("b")
    run.text("c")  # still within the interval: waiting
    clock.now += settings.stream_coalesce_seconds
    run.text("d")  # the interval passed: b, c and d go out together
    run.text("x" * settings.stream_coalesce_chars)  # enough characters: out at once
    run.text("e")
    run.end_text()
    assert [d["text"] for t, d, _ in written] == ["a", "bcd", "x" * settings.stream_coalesce_chars, "e"]
    assert {t for t, _, _ in written} == {EventType.MESSAGE_DELTA} and {a for *_, a in written} == {2}


def test_a_lost_lease_stops_the_writing_and_a_failed_append_stops_it_too():
    written, append = recorder()
    ours = [True]
    run = RunEvents(uuid.uuid4(), 1, lambda: ours[0], append=append)
    run.started()
    run.text("first")
    ours[0] = False
    run.text("late")
    run.end_text()
    run.close()
    assert [t for t, _, _ in written] == ["run.started", "message.delta"]

    lost_at_once = RunEvents(uuid.uuid4(), 1, lambda: False, append=append)
    lost_at_once.started()  # waits for the next event, and by then the lease is gone: nothing at all
    lost_at_once.close()
    assert len(written) == 2

    calls = []
    broken = RunEvents(uuid.uuid4(), 1, lambda: True, append=lambda *a, **k: calls.append(a) and None)
    broken.started()
    broken.text("x")
    broken.end_text()
    assert len(calls) == 1  # Redis away: one try, then the run goes on without a live view


def test_events_written_back_to_back_share_a_round_trip_and_the_ttl_is_refreshed_rarely():
    """run.started goes with the first step.started, the text still waiting with the step.* event
    after it; the log's TTL is refreshed by the attempt's first write, then after half the active TTL."""
    from types import SimpleNamespace

    trips: list = []
    written, append = recorder(trips)
    clock = Clock()
    run = RunEvents(uuid.uuid4(), 1, lambda: True, clock=clock, append=append)
    run.started()
    run.step_started(0, "model_call", "m", None)
    run.text("a")  # the first piece at once
    run.text("b")  # within the interval: waits for the step's end
    step = SimpleNamespace(index=0, kind="model_call", name="m", arguments=None, status="completed", output="ab")
    clock.now += settings.stream_active_ttl  # a long step: the next write refreshes the TTL
    run.step_completed(step)
    run.close()  # nothing left
    assert trips == [(["run.started", "step.started"], True), (["message.delta"], False),
                     (["message.delta", "step.completed"], True)]
    assert "".join(d["text"] for t, d, _ in written if t == "message.delta") == "ab"


def test_close_writes_run_started_and_the_text_when_no_step_did():
    written, append = recorder()
    run = RunEvents(uuid.uuid4(), 1, lambda: True, append=append)
    run.started()
    run.text("<ci")  # held back: it may become a citation marker
    run.close()
    assert [(t, d) for t, d, _ in written] == [("run.started", {"run_id": str(run.run_id), "attempt": 1}),
                                              ("message.delta", {"text": "<ci"})]


def test_batched_events_go_out_together_at_most_every_interval_and_the_rest_goes_to_the_finish():
    """Embedded mode (the run_events table on SQLite): one write per interval, in append order, and
    what still waits at the end is handed over (runs.finish writes it with the answer)."""
    batches: list[list[str]] = []
    clock = Clock()
    run = RunEvents(uuid.uuid4(), 1, lambda: True, clock=clock, batch_seconds=0.25,
                    append=lambda _run, items, _attempt, **_: batches.append(
                        [t if t != EventType.MESSAGE_DELTA else d["text"] for t, d in items]) or [1])
    run.started()
    run.step_started(0, "model_call", "m", None)
    run.text("a")
    clock.now += 0.1
    run.text("b")
    assert batches == []  # a short run's events all wait for the finish
    clock.now += 0.2  # past the interval since the run began: the next event writes everything waiting
    run.text("c")
    assert batches == [["run.started", "step.started", "a", "bc"]]  # b waited STREAM_COALESCE_SECONDS (0.15)
    clock.now += 0.1
    run.text("d")
    run.end_text()
    assert run.take_pending() == [(EventType.MESSAGE_DELTA, {"text": "d"})]
    run.text("late")  # the finish owns the rest: nothing more is written
    run.end_text()
    assert len(batches) == 1 and run.take_pending() == []


def test_batched_events_of_a_worker_that_lost_its_lease_are_dropped():
    batches = []
    ours = [True]
    run = RunEvents(uuid.uuid4(), 1, lambda: ours[0], clock=Clock(), batch_seconds=0.25,
                    append=lambda *a, **_: batches.append(a) or [1])
    run.started()
    run.text("partial")
    ours[0] = False
    run.end_text()
    run.write_pending()
    assert batches == [] and run.take_pending() == []


def test_the_flusher_writes_the_events_of_a_run_that_waits_on_a_slow_tool():
    """A run blocked in a tool writes no event of its own: the process's flusher writes its waiting
    ``step.started`` once it has waited the interval, so a streaming client sees the tool start."""
    from worker.agent import streaming

    batches = []
    run = RunEvents(uuid.uuid4(), 1, lambda: True, batch_seconds=0.05,
                    append=lambda _run, items, _attempt, **_: batches.append([t for t, _ in items]) or [1])
    streaming._flusher.add(run)
    try:
        run.step_started(0, "tool_call", "slow_tool", None)
        deadline = time.monotonic() + 5
        while not batches and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batches == [["step.started"]]
    finally:
        run.take_pending()
