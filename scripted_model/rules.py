"""Pure, deterministic rules: an OpenAI-format conversation -> the scripted reply.

Kept free of I/O and global state so every behaviour the rest of the project
relies on (tool calls, cited answers, directives) can be unit-tested directly.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

LABEL = "(Threadline development model) "

ABUSE_WORDS = ("idiot", "stupid", "hate you", "kill you", "shut up", "moron")
MEMORY_HEADING = "relevant memories about the user:"
DATA_BLOCK_MARK = "[data "  # a message the agent marks as data (its memory block), not the user speaking
MEMORY_PLACEHOLDER = "{memories}"
MAX_DIRECTIVE_LATENCY = 3600.0

_IDENT = r"[A-Za-z_][\w.-]*"
_URL_RE = re.compile(r"https?://[^\s<>\"'()\[\]{}]+", re.I)
_KV_RE = re.compile(r"(?<![\w/?&=])([A-Za-z_][\w.-]*)=([^\s,;]+)")
_QUESTION_WORDS_RE = re.compile(
    r"\b(?:how|what's|whats|what|where|when|why|which|who|whom|do|does|did|"
    r"can|could|should|would|is|are|i|please|tell|me)\b",
    re.I,
)


# --------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Directives:
    """Inline test directives found in the last user message.

    ``[[latency:S]]``, ``[[fail:STATUS xN]]``, ``[[hang]]``, ``[[tool:NAME {json}]]`` (the JSON is read
    by Python's json, so ``NaN`` and ``Infinity`` pass into the call's arguments, as a real model may
    send them), and ``[[nul]]``: the text answer carries a NUL character, as ``... [\x00]`` at its end
    (PostgreSQL cannot store one: shared/storable.py)."""

    latency: float = 0.0
    fail_status: int | None = None
    fail_count: int = 0
    hang: bool = False
    tool: tuple[str, dict] | None = None
    force_tool: bool = False  # [[tool!:…]]: call it even when not offered (a model that ignores the tool list)
    offered_tools: bool = False  # [[offered-tools]]: answer with the names of the tools offered
    nul: bool = False


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict

    def to_openai(self) -> dict:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments)},
        }


@dataclass
class Reply:
    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


# --------------------------------------------------------------------------
# Conversation helpers
# --------------------------------------------------------------------------


def message_text(message: dict) -> str:
    """Text of a message whose content may be a string, None or a list of parts."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return str(content)


def is_data_block(message: dict) -> bool:
    """A user-role message the agent marks as data (``[DATA memories] …``): not something the user said."""
    return message.get("role") == "user" and message_text(message).lstrip().lower().startswith(DATA_BLOCK_MARK)


def _user_texts(messages: list[dict]) -> list[str]:
    return [message_text(m) for m in messages if m.get("role") == "user" and not is_data_block(m)]


def last_user_text(messages: list[dict]) -> str | None:
    texts = _user_texts(messages)
    return texts[-1] if texts else None


def conversation_key(messages: list[dict]) -> str:
    """Stable key of a conversation: hash of its first user message's text."""
    texts = _user_texts(messages)
    first = texts[0] if texts else ""
    return hashlib.sha256(first.encode("utf-8")).hexdigest()


def offered_tool_names(tools: list | None, tool_choice=None) -> set[str]:
    """Function names the model may call, honouring tool_choice none / forced."""
    names = set()
    for tool in tools or []:
        if isinstance(tool, dict):
            fn = tool.get("function")
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                names.add(fn["name"])
    if tool_choice == "none":
        return set()
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        if isinstance(fn, dict) and fn.get("name") in names:
            return {fn["name"]}
    return names


# --------------------------------------------------------------------------
# Directives
# --------------------------------------------------------------------------

_LATENCY_RE = re.compile(r"\[\[\s*latency\s*:\s*([0-9]*\.?[0-9]+)\s*\]\]", re.I)
_FAIL_RE = re.compile(r"\[\[\s*fail\s*:\s*(\d{3})\s*(?:x\s*(\d+))?\s*\]\]", re.I)
_HANG_RE = re.compile(r"\[\[\s*hang\s*\]\]", re.I)
_TOOL_START_RE = re.compile(r"\[\[\s*tool\s*(!?)\s*:\s*([A-Za-z0-9_.-]+)\s*", re.I)
_OFFERED_TOOLS_RE = re.compile(r"\[\[\s*offered-tools\s*\]\]", re.I)
_NUL_RE = re.compile(r"\[\[\s*nul\s*\]\]", re.I)
_CLOSE_RE = re.compile(r"\s*\]\]")


def _extract_tool_directive(text: str) -> tuple[str, tuple[str, dict] | None, bool]:
    """Find `[[tool:NAME {json}]]` (or `[[tool!:…]]`, forced); JSON is decoded properly so `]]` inside
    it is fine. Returns (text without it, (name, args) or None, forced)."""
    decoder = json.JSONDecoder()
    for match in _TOOL_START_RE.finditer(text):
        pos = match.end()
        args: dict = {}
        if pos < len(text) and text[pos] == "{":
            try:
                value, pos = decoder.raw_decode(text, pos)
            except ValueError:
                continue
            if not isinstance(value, dict):
                continue
            args = value
        close = _CLOSE_RE.match(text, pos)
        if not close:
            continue
        return text[: match.start()] + text[close.end():], (match.group(2), args), bool(match.group(1))
    return text, None, False


def parse_directives(text: str) -> tuple[str, Directives]:
    """Strip `[[...]]` directives from text; return (clean text, directives)."""
    text, tool, forced = _extract_tool_directive(text)
    offered = bool(_OFFERED_TOOLS_RE.search(text))
    text = _OFFERED_TOOLS_RE.sub("", text)
    latency = 0.0
    m = _LATENCY_RE.search(text)
    if m:
        latency = min(float(m.group(1)), MAX_DIRECTIVE_LATENCY)
    fail_status, fail_count = None, 0
    m = _FAIL_RE.search(text)
    if m:
        fail_status, fail_count = int(m.group(1)), int(m.group(2) or 1)
    hang = bool(_HANG_RE.search(text))
    nul = bool(_NUL_RE.search(text))
    for regex in (_LATENCY_RE, _FAIL_RE, _HANG_RE, _NUL_RE):
        text = regex.sub("", text)
    clean = re.sub(r"[ \t]{2,}", " ", text).strip()
    return clean, Directives(latency, fail_status, fail_count, hang, tool, forced, offered, nul)


def conversation_directives(messages: list[dict]) -> Directives:
    text = last_user_text(messages)
    return parse_directives(text)[1] if text is not None else Directives()


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def tool_call_id(messages: list[dict], index: int, name: str) -> str:
    """Deterministic id, unique per conversation state, so replays are identical."""
    seed = json.dumps(messages, sort_keys=True, default=str) + f"|{index}|{name}"
    return "call_" + hashlib.sha256(seed.encode("utf-8")).hexdigest()[:24]


def reply(messages: list[dict], tool_names: set[str] | frozenset = frozenset()) -> Reply:
    """The scripted reply to a conversation, given the offered tool names."""
    if not messages:
        return Reply(content=LABEL + "Hello.")
    last = messages[-1]
    role = last.get("role")
    system = "\n".join(
        message_text(m) for m in messages if m.get("role") in ("system", "developer") or is_data_block(m)
    )
    if role == "tool":
        injected = follow_injection(messages, set(tool_names), system)
        if injected is not None:
            return Reply(tool_calls=[ToolCall(tool_call_id(messages, 0, injected[0]), *injected)])
        return Reply(content=answer_tool_round(messages))
    if role != "user":
        return Reply(content=LABEL + "Hello.")
    text, directives = parse_directives(message_text(last))
    if directives.offered_tools:
        return Reply(content=LABEL + "Tools offered: " + (", ".join(sorted(tool_names)) or "none"))
    result = answer_user(text, set(tool_names), system, directives.tool, directives.force_tool)
    if isinstance(result, str):
        return Reply(content=result + " [\x00]" if directives.nul else result)
    calls = [
        ToolCall(tool_call_id(messages, i, name), name, args)
        for i, (name, args) in enumerate(result)
    ]
    return Reply(tool_calls=calls)


# --------------------------------------------------------------------------
# B. user message rules
# --------------------------------------------------------------------------


def _trim(value: str) -> str:
    return value.strip().rstrip(".").strip()


def _strip_quotes(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
        return value[1:-1]
    if len(value) >= 2 and value[0] in "“‘" and value[-1] in "”’":
        return value[1:-1]
    return value


def _unquote(value: str) -> str:
    """A memory the agent quoted as a JSON string, as its text (unquoted lines pass as they are)."""
    if value.startswith('"'):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value


def memory_lines(system_text: str) -> list[str]:
    """`- ` lines following the 'Relevant memories about the user:' heading (JSON-quoted or not)."""
    lines = system_text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().lower() == MEMORY_HEADING:
            found = []
            for follow in lines[i + 1:]:
                stripped = follow.strip()
                if stripped.startswith("- "):
                    found.append(_unquote(stripped[2:].strip()))
                elif found or stripped:
                    break
            if found:
                return found
    return []


def _rule_remember(text: str):
    if re.search(r"\bdo you remember\b", text, re.I):
        return None  # a recall question, not a request to remember
    m = re.search(
        r"\b(?:please\s+)?remember\s+that\s+(.+)|\bremember\s*:\s*(.+)|\bplease\s+remember\s+(.+)",
        text,
        re.I | re.S,
    )
    if not m:
        return None
    content = _trim(next(g for g in m.groups() if g is not None))
    return ("save_memory", {"content": content}) if content else None


def _rule_forget(text: str):
    m = re.search(r"\bforget\s+(?:that|about)\s+(.+)", text, re.I | re.S)
    if not m:
        return None
    query = _trim(m.group(1))
    return ("delete_memory", {"query": query}) if query else None


def _rule_recall(text: str) -> tuple[bool, str]:
    m = re.search(r"\bwhat(?:\s+is|'s|’s)\s+my\s+([^?!.]+)", text, re.I)
    if m:
        return True, m.group(1).strip() or text
    if re.search(r"\b(?:what do you remember|do you remember)\b", text, re.I):
        return True, text
    return False, ""


def parse_set_fields(text: str) -> dict[str, str]:
    """`set (the )?(field )?NAME to VALUE [and NAME to VALUE ...]` -> {NAME: VALUE}."""
    head = re.search(rf"\bset\s+(?:the\s+)?(?:field\s+)?({_IDENT})\s+to\s+", text, re.I)
    if not head:
        return {}
    pair_re = re.compile(rf"^(?:set\s+)?(?:the\s+)?(?:field\s+)?({_IDENT})\s+to\s+(.*)$", re.I | re.S)
    pairs: list[list[str]] = [[head.group(1), ""]]
    pieces = re.split(r"\s+and\s+", text[head.end():])
    pairs[0][1] = pieces[0]
    for piece in pieces[1:]:
        m = pair_re.match(piece)
        if m:
            pairs.append([m.group(1), m.group(2)])
        else:
            pairs[-1][1] += " and " + piece
    return {name: _strip_quotes(_trim(value)) for name, value in pairs}


def _url(text: str) -> str | None:
    m = _URL_RE.search(text)
    return m.group(0).rstrip(".,;:!?") if m else None


def _rule_web(text: str):
    m = re.search(r"\bsearch the web for\s+(.+)|\bweb search\s+(.+)|\bgoogle\s+(.+)", text, re.I | re.S)
    if not m:
        return None
    query = next(g for g in m.groups() if g is not None)
    query = re.split(r"\s+(?:and|then)\s+(?=(?:read|open|summari)\w*\s)", query, flags=re.I)[0]
    query = query.strip().rstrip(".?!").strip()
    return ("web_search", {"query": query}) if query else None


def _rule_read_page(text: str):
    url = _url(text)
    if url and re.search(r"read|open|summari", text, re.I):
        return ("read_web_page", {"url": url})
    return None


def _rule_data(text: str):
    lower = text.lower()
    if "my threads" in lower or "how many threads" in lower:
        view, params = "my_threads", {}
    elif "my messages" in lower or "my recent messages" in lower:
        view, params = "my_recent_messages", {"limit": 5}
    else:
        return None
    for key, value in _KV_RE.findall(text):
        params[key] = value.rstrip(".,;?!")
    return ("query_data", {"view": view, "params": params})


def _rule_docs(text: str):
    if not re.search(r"\bdocs\b|documentation|threadline|\bhow do i\b|\bhow to\b", text, re.I):
        return None
    query = _QUESTION_WORDS_RE.sub(" ", text).replace("?", " ")
    query = re.sub(r"\s+", " ", query).strip(" ,.!") or text.strip()
    return ("search_docs", {"query": query[:200]})


def plain_answer(text: str) -> str:
    return (
        f'{LABEL}You said: "{text[:200]}". I am a scripted model for development and '
        "tests; set OPENAI_BASE_URL to use a real one."
    )


def answer_user(
    text: str,
    tools: set[str],
    system_text: str = "",
    tool_directive: tuple[str, dict] | None = None,
    force_tool: bool = False,
):
    """Rules 1-11. Returns the answer text, or a list of (tool name, args) calls."""
    if tool_directive and (tool_directive[0] in tools or force_tool):
        return [tool_directive]
    lower = text.lower()
    if "report_conversation" in tools and any(w in lower for w in ABUSE_WORDS):
        return [("report_conversation", {"reason": "abusive language"})]
    for rule in (_rule_remember, _rule_forget):
        call = rule(text)
        if call and call[0] in tools:
            return [call]
    is_recall, query = _rule_recall(text)
    if is_recall:
        memories = memory_lines(system_text)
        if memories:
            return LABEL + "From what I remember: " + "; ".join(memories)
        if "search_memories" in tools:
            return [("search_memories", {"query": query})]
    changes = parse_set_fields(text)
    if changes and "update_context" in tools:
        return [("update_context", {"changes": {"form": changes}})]
    calls = [c for c in (_rule_web(text), _rule_read_page(text)) if c and c[0] in tools]
    if calls:
        return calls
    for rule in (_rule_data, _rule_docs):
        call = rule(text)
        if call and call[0] in tools:
            return [call]
    return plain_answer(text)


# --------------------------------------------------------------------------
# A. tool results round
# --------------------------------------------------------------------------


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _fill(value, memories: str):
    if isinstance(value, str):
        return value.replace(MEMORY_PLACEHOLDER, memories)
    if isinstance(value, dict):
        return {k: _fill(v, memories) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, memories) for v in value]
    return value


def follow_injection(messages: list[dict], tools: set[str], system_text: str = "") -> tuple[str, dict] | None:
    """A gullible model, for prompt-injection tests: when a result of the trailing tool round carries a
    `[[tool:NAME {json}]]` instruction (say, on a web page), call that tool, with `{memories}` in its
    string arguments replaced by the memories the prompt holds. `[[tool!:…]]` calls it even when not
    offered. Each instruction is followed at most once per conversation (no loops)."""
    start = len(messages)
    while start > 0 and messages[start - 1].get("role") == "tool":
        start -= 1
    made = {
        (fn.get("name"), fn.get("arguments"))
        for m in messages if m.get("role") == "assistant" for c in m.get("tool_calls") or []
        if isinstance(fn := c.get("function"), dict)
    }
    for message in messages[start:]:
        text = message_text(message)
        try:
            texts = _strings(json.loads(text))
        except ValueError:
            texts = [text]
        for candidate in texts:
            _, directive, forced = _extract_tool_directive(candidate)
            if directive is None or (directive[0] not in tools and not forced):
                continue
            name, args = directive[0], _fill(directive[1], "; ".join(memory_lines(system_text)))
            if (name, json.dumps(args)) not in made:
                return name, args
    return None


def first_sentence(content: str) -> str:
    """Verbatim first sentence (<= 300 chars), else the first 200 chars."""
    text = content.lstrip()
    m = re.search(r"[.!?](?=\s|$)", text[:300])
    if m:
        return text[: m.end()]
    return text[:200]


def _cite(document_name, chunk_id, content) -> str:
    sentence = first_sentence(content or "")
    return (
        f"According to the documentation ({document_name}): "
        f'<cite chunk="{chunk_id}">{sentence}</cite>'
    )


def _plural(n, one: str, many: str) -> str:
    return one if n == 1 else many


def _flatten(value, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(value, dict) and value:
        out = []
        for key, sub in value.items():
            out.extend(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [(prefix, value)]


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _updated_form(args: dict, data: dict) -> str:
    changes = args.get("changes") if isinstance(args, dict) else None
    if not isinstance(changes, dict) or not changes:
        changes = data.get("updated_context") or {}
    leaves = []
    for path, value in _flatten(changes):
        if path.startswith("form."):
            path = path[len("form."):]
        leaves.append(f"{path}={_show(value)}")
    return "I updated your form: " + ", ".join(leaves)


def describe_tool_result(name: str, content: str, args: dict | None = None) -> str:
    """One sentence about one tool result (content is the tool message text)."""
    args = args or {}
    try:
        data = json.loads(content)
    except (TypeError, ValueError):
        data = None
    if isinstance(data, dict) and "error" in data:
        err = data["error"]
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            err = err["message"]
        return f"The tool {name} failed: {_show(err)}."
    if not isinstance(data, dict):
        return f"Tool {name} returned: {str(content)[:200]}"
    try:
        return _describe_known(name, data, args, content)
    except (KeyError, TypeError, AttributeError, IndexError):
        return f"Tool {name} returned: {str(content)[:200]}"


def _describe_known(name: str, data: dict, args: dict, content: str) -> str:
    if name == "search_docs":
        results = data.get("results") or []
        if not results:
            return "I could not find that in the documentation."
        top = results[0]
        return _cite(top["document_name"], top["chunk_id"], top["content"])
    if name == "read_doc":
        return _cite(data["document_name"], data["chunk_id"], data["content"])
    if name == "web_search":
        results = data.get("results") or []
        if not results:
            return "The web search found nothing."
        items = [f"{i}. {r.get('title', '')} ({r.get('url', '')})" for i, r in enumerate(results[:3], 1)]
        return "Top web results: " + "; ".join(items)
    if name == "read_web_page":
        return f'The page "{data.get("title", "")}" says: {(data.get("text") or "")[:300]}'
    if name == "save_memory":
        return f"I will remember that: {data['saved']['content']}"
    if name == "search_memories":
        memories = data.get("memories") or []
        if not memories:
            return "I have no memories about that."
        return "Here is what I remember about you: " + "; ".join(m["content"] for m in memories)
    if name == "delete_memory":
        n = data["deleted"]
        return f"I forgot {n} {_plural(n, 'memory', 'memories')}."
    if name == "query_data":
        rows = data.get("rows") or []
        return (
            f"The view {data.get('view')} returned {len(rows)} row(s): "
            f"{json.dumps(rows[:5], default=str)}"
        )
    if name == "report_conversation":
        return "I have reported this conversation to a moderator."
    if name == "update_context":
        return _updated_form(args, data)
    return f"Tool {name} returned: {content[:200]}"


def answer_tool_round(messages: list[dict]) -> str:
    """Final answer composed from every tool message of the trailing tool round."""
    start = len(messages)
    while start > 0 and messages[start - 1].get("role") == "tool":
        start -= 1
    calls: dict[str, tuple[str, dict]] = {}
    if start > 0 and messages[start - 1].get("role") == "assistant":
        for call in messages[start - 1].get("tool_calls") or []:
            fn = call.get("function") or {}
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except ValueError:
                args = {}
            calls[call.get("id")] = (fn.get("name") or "unknown", args if isinstance(args, dict) else {})
    parts = []
    for msg in messages[start:]:
        name, args = calls.get(msg.get("tool_call_id"), (msg.get("name") or "unknown", {}))
        parts.append(describe_tool_result(name, message_text(msg), args))
    return LABEL + "\n\n".join(parts)
