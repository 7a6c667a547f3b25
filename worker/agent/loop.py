"""The agent loop: model call → tool calls → model call … until a final answer, bounded in steps and time.

Every model call and tool call becomes a StepRecord; tool failures go back to the model as tool
results; model failures the SDK could not retry away end the run with a user-safe error answer.
The model answers as a stream: its text goes to the run's event log as it arrives (``RunEvents``,
worker/agent/streaming.py), and so does every step, while the stored answer is written at the end as
before (worker/tasks.py).

A cancel (issue 13) trips ``cancelled`` (shared/notify.py, CancelWatch): the agent looks at it after
every stream chunk and before and after every step. It then leaves the stream's ``with`` block, which
closes the stream (worker/llm.py) and so the model's HTTP response (the model call is aborted, not drained),
starts no further tool call (tools already running finish: their side effects stay and their steps
are recorded), and returns the text streamed so far as a ``cancelled`` outcome.
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import openai

from shared.config import settings
from shared.models import StepStatus, utcnow
from shared.observability import context as observed
from shared.services import knowledge
from shared.services import memories as memory_store
from shared.services.runs import Outcome, RunJob, StepRecord
from shared.tools import ToolName, missing_permissions
from worker import llm, tools
from worker.agent import citations, prompt
from worker.agent.streaming import Assembled, MessageAssembler, RunEvents, parse_arguments
from worker.tools import policy
from worker.tools.base import ToolContext, ToolError

log = logging.getLogger(__name__)

MODEL_FAILED_TEXT = "Sorry, the AI model is not available right now. Please try again in a moment."


def safe_error_summary(exc: Exception) -> str:
    """What a failed model call's step shows: the error class and HTTP status, never the provider's message."""
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__}" + (f" (status {status})" if status else "")


class LeaseLost(Exception):
    """Another worker took this run over; stop without writing anything."""


class CancelRequested(Exception):
    """The run was cancelled: stop at once and keep what is there."""


class DeadlineExceeded(Exception):
    """The run used up its time budget (settings.run_deadline)."""


class Agent:
    def __init__(self, job: RunJob, still_ours: Callable[[], bool], memories: list[str] | None = None,
                 events: RunEvents | None = None, cancelled: Callable[[], bool] = lambda: False):
        self.job = job
        self.still_ours = still_ours
        self.cancelled = cancelled
        self.partial = ""  # the text the current model call has streamed so far
        self.events = events or RunEvents(job.run_id, job.attempt, still_ours)
        self.entry = llm.model_entry(job.model_id)
        # The run's permissions and taint state: the model is offered only the tools the poster's
        # credential allows, and dispatch checks every call again (worker/tools/policy.py).
        self.guard = tools.RunGuard(permissions=job.permissions, request=job.content)
        self.toolset = tools.available(job.allowed_tools, self.guard)
        self.tool_schemas = [tools.schema(m, self.guard) for m in self.toolset]
        self.ctx = ToolContext(
            tenant_id=job.tenant_id, user_id=job.user_id, thread_id=job.thread_id, run_id=job.run_id,
            context=job.context, guard=self.guard,
        )
        self.messages: list[dict[str, Any]] = prompt.build_messages(job, memories)
        self.steps: list[StepRecord] = []
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self.deadline = time.monotonic() + settings.run_deadline

    def run(self) -> Outcome:
        try:
            for _ in range(settings.run_max_steps):
                message = self._call_model(with_tools=bool(self.toolset))
                if not message.tool_calls:
                    return self._final(message.content or "")
                self._run_tools(message)
            return self._final(self._call_model(with_tools=False).content or "")
        except CancelRequested:
            return self._stopped()
        except (openai.OpenAIError, DeadlineExceeded) as exc:
            if self.cancelled():  # the stream broke because we were stopping anyway
                return self._stopped()
            log.warning("run %s: model failed: %r", self.job.run_id, exc)
            return self._outcome(MODEL_FAILED_TEXT, is_error=True, error=f"{type(exc).__name__}: {exc}"[:1000])

    def _stopped(self) -> Outcome:
        log.info("run %s: cancelled", self.job.run_id)
        self.events.end_text()
        content, cited = citations.extract(self.partial, self._source)
        return self._outcome(content, citations=cited, cancelled=True)

    def _check(self) -> None:
        # The cancel first: a cancel that ended the run itself (runs.end_cancelled) also ends the lease,
        # and the steps done so far must still reach runs.finish to be recorded.
        if self.cancelled():
            raise CancelRequested(str(self.job.run_id))
        if not self.still_ours():
            raise LeaseLost(str(self.job.run_id))
        if time.monotonic() > self.deadline:
            raise DeadlineExceeded(f"run took longer than {settings.run_deadline:g}s")

    def _call_model(self, *, with_tools: bool) -> Assembled:
        self._check()
        started = utcnow()
        self.events.step_started(len(self.steps), "model_call", self.entry.model, None)
        body: dict[str, Any] = {"model": self.entry.model, "messages": self.messages,
                                "stream_options": {"include_usage": True}}
        if with_tools:
            body["tools"] = self.tool_schemas
        remaining = self.deadline - time.monotonic()
        timeout = max(1.0, min(settings.model_timeout, remaining))
        # The SDK retries timeouts too: allow only as many attempts as fit in the run's deadline.
        retries = max(0, min(settings.model_max_retries, int(remaining // timeout) - 1))
        status, usage, summary = StepStatus.FAILED, None, ""
        try:
            assembler = MessageAssembler()
            self.partial = ""
            with llm.stream(self.entry, body, timeout=timeout, max_retries=retries) as chunks:
                for chunk in chunks:
                    if text := assembler.add(chunk):
                        self.partial += text
                        self.events.text(text)
                    self._check()  # a lost lease, a cancel or the deadline ends the call between chunks
            # The text still waiting goes out with this step's step.completed (_record, below).
            message = assembler.result()
            usage = message.usage
            for key in self.usage:
                self.usage[key] += (usage or {}).get(key) or 0
            status = StepStatus.COMPLETED
            summary = message.content or json.dumps(
                [{"name": c.name, "arguments": c.arguments} for c in message.tool_calls]
            )
            return message
        except CancelRequested:
            status, summary = StepStatus.FAILED, "cancelled"
            raise
        except openai.OpenAIError as exc:
            summary = safe_error_summary(exc)  # steps are shown to users: no provider error text
            raise
        finally:
            self._record("model_call", self.entry.model, None, summary, status, started, usage)

    def _run_tools(self, message: Assembled) -> None:
        self.messages.append(message.as_message())
        calls = list(message.tool_calls)
        self._check()
        for offset, call in enumerate(calls):  # recorded in this order below, so these are their indexes
            self.events.step_started(len(self.steps) + offset, "tool_call", call.name, parse_arguments(call.arguments))
        with ThreadPoolExecutor(max_workers=min(8, len(calls))) as pool:
            results = list(pool.map(observed.carry(self._run_tool), calls))  # run ids, trace
        for call, result in zip(calls, results):
            if result is None:  # skipped: the run was cancelled before this tool started
                continue
            output, status, started, arguments = result
            self._record("tool_call", call.name, arguments, output, status, started, None)
            self.messages.append({"role": "tool", "tool_call_id": call.id, "content": output})
            if status == StepStatus.COMPLETED:  # the taint changes between turns only (policy.RunGuard)
                self.guard.absorb(call.name, json.loads(output))
        self._check()  # cancelled while tools ran: their steps are recorded, no further model call

    def _run_tool(self, call) -> tuple[str, str, Any, dict | None] | None:
        if self.cancelled():
            return None
        started = utcnow()
        module = tools.REGISTRY.get(call.name)
        arguments: dict | None = None
        try:
            if module is None:
                raise ToolError(f"unknown tool '{call.name}'")
            arguments = json.loads(call.arguments or "{}")
            if not isinstance(arguments, dict):
                raise ToolError("arguments must be a JSON object")
            if module not in self.toolset:  # never offered (a model may still call it): refused, never run
                raise ToolError(self.guard.refusal(call.name, arguments)  # the permission it lacks, if that is why
                                or f"the tool {call.name} is not available in this conversation")
            result = tools.dispatch(module, arguments, self.ctx)  # checks permissions and the taint rule again
            if call.name in policy.UNTRUSTED_TOOLS:  # framed as data for the model (and the step)
                result = {"notice": policy.UNTRUSTED_NOTICE, **result}
            output = json.dumps(result, default=str)
            return output, StepStatus.COMPLETED, started, arguments
        except (ToolError, json.JSONDecodeError) as exc:
            return json.dumps({"error": str(exc)}), StepStatus.FAILED, started, arguments
        except Exception as exc:  # noqa: BLE001 - a tool bug is reported to the model, not fatal to the run
            log.exception("tool %s crashed", call.name)
            return json.dumps({"error": f"the tool failed: {type(exc).__name__}"}), StepStatus.FAILED, started, arguments

    def _record(self, kind, name, arguments, output, status, started, usage) -> None:
        step = StepRecord(
            index=len(self.steps), kind=kind, name=name, arguments=arguments,
            output=(output or "")[: settings.tool_output_chars], status=status, started_at=started,
            finished_at=utcnow(), usage=usage,
        )
        self.steps.append(step)
        self.events.step_completed(step)

    def _final(self, text: str) -> Outcome:
        content, cited = citations.extract(text, self._source)
        return self._outcome(content, citations=cited)

    def _source(self, chunk_id: str) -> dict[str, Any] | None:
        """A cited chunk: fetched in this run, else looked up in the tenant's scope (e.g. cited from history)."""
        return self.ctx.sources.get(chunk_id) or knowledge.citation_source(self.job.tenant_id, chunk_id)

    def _outcome(self, content: str, **kwargs: Any) -> Outcome:
        return Outcome(
            content=content, steps=self.steps, usage=self.usage,
            updated_context=self.ctx.context, context_changed=self.ctx.context_changed, **kwargs,
        )


def recall_memories(job: RunJob) -> list[str]:
    """The user's memories most relevant to this message, for the prompt's memory block (none if the
    workflow leaves out the memory tools or the poster's credential may not read memories; none
    rather than a failed run if the lookup fails)."""
    if job.allowed_tools is not None and ToolName.SEARCH_MEMORIES not in job.allowed_tools:
        return []
    if missing_permissions(ToolName.SEARCH_MEMORIES, job.permissions):
        return []
    try:
        if job.newest_memories is not None:  # read by the claim (PostgreSQL)
            return memory_store.recall_from(job.newest_memories, job.tenant_id, job.user_id, job.content,
                                            settings.memory_prompt_limit)
        return memory_store.recall(job.tenant_id, job.user_id, job.content, settings.memory_prompt_limit)
    except Exception:  # noqa: BLE001 - memories improve an answer; their absence must not stop it
        log.warning("run %s: could not recall memories", job.run_id, exc_info=True)
        return []


def run(job: RunJob, still_ours: Callable[[], bool], cancelled: Callable[[], bool] = lambda: False,
        events: RunEvents | None = None) -> Outcome:
    """Answer the job. Pass ``events`` to keep what it has not written yet (embedded mode batches them)
    for the finish's transaction (``RunEvents.take_pending``); without it they are written here, when
    the agent ends or fails."""
    own = events is None
    if events is None:
        events = RunEvents(job.run_id, job.attempt, still_ours)
    events.started()  # attempt n: a client drops any partial text of an earlier attempt
    try:
        return Agent(job, still_ours, recall_memories(job), events, cancelled).run()
    finally:
        if own:
            events.close()  # what is still waiting (run.started too, if no step wrote it)
