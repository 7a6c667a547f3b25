// The chat page: a client of the chats dialect with its cookie session, nothing else.
//
// - Sending POSTs with Accept: text/event-stream and reads the answer from the fetch body (SSE).
// - A pending answer found on load (status queued / in_progress: the page was reloaded mid-answer)
//   is attached with EventSource on GET …/stream from the start; run.started resets the text, so the
//   text is rebuilt once, never duplicated. EventSource resumes with Last-Event-ID by itself after a
//   network loss (the "Reconnecting…" indicator shows meanwhile); a POST stream that breaks is
//   continued the same way from the last event id it saw.
// - The terminal event's message is the truth for the content (docs/api.md, Streaming).
import { citationMark, clean, renderMarkdown } from "./markdown.js";
import { readEvents } from "./sse.js";

const $ = (id) => document.getElementById(id);
const ACTIVE = new Set(["queued", "in_progress"]);
const PAGE = 30;

const state = {
  user: null,
  chat: null, // the open chat resource, or null for a new one
  oldestId: null,
  hasOlder: false,
  loadingOlder: false,
  streaming: null, // the AnswerView being streamed
  models: [],
  defaultModel: null,
};

// Timings the browser tests read: when the first text arrived, and when it was painted.
window.threadline = { timings: [] };

// ---------------------------------------------------------------------------------------------
// HTTP

class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.message) message = body.message;
  } catch { /* not JSON */ }
  return new ApiError(response.status, message, Number(response.headers.get("Retry-After")) || null);
}

async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, "The server cannot be reached. Check your connection.");
  }
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

function showError(error) {
  if (error.status === 401 && state.user) {
    showLogin("Your session has ended. Please log in again.");
    return;
  }
  if (error.status === 429) {
    banner(`Slow down: too many requests. Retry in ${error.retryAfter || "a few"} s.`);
    return;
  }
  banner(error.message || String(error));
}

let bannerTimer = null;
function banner(text) {
  const el = $("banner");
  el.textContent = text;
  el.hidden = !text;
  clearTimeout(bannerTimer);
  if (text) bannerTimer = setTimeout(() => { el.hidden = true; }, 8000);
}

function connection(lost) {
  $("connection").hidden = !lost;
}

// ---------------------------------------------------------------------------------------------
// Sign in / out

function showLogin(message = "") {
  state.user = null;
  delete document.body.dataset.signedIn;
  stopStreaming();
  $("chat-view").hidden = true;
  $("pickers").hidden = true;
  $("logout").hidden = true;
  $("toggle-chats").hidden = true;
  $("who").textContent = "";
  $("login-view").hidden = false;
  $("login-error").textContent = message;
  $("login-email").focus();
}

async function signedIn(user) {
  state.user = user;
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  $("logout").hidden = false;
  $("toggle-chats").hidden = false;
  $("who").textContent = user.email || user.id;
  await Promise.all([loadPickers(), loadChats()]);
  const wanted = location.hash.slice(1);
  const chat = wanted && state.chats.find((c) => c.id === wanted);
  if (chat) await openChat(chat);
  else if (wanted) {
    try { await openChat((await api("GET", `/api/chats/${encodeURIComponent(wanted)}`)).data); }
    catch (error) { newChat(); if (error.status !== 404 && error.status !== 400) showError(error); }
  } else newChat();
  $("input").focus();
  document.body.dataset.signedIn = "true"; // loaded: the browser tests wait for this
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    const { data } = await api("POST", "/api/auth/login",
      { email: $("login-email").value, password: $("login-password").value });
    $("login-password").value = "";
    await signedIn(data);
  } catch (error) {
    $("login-error").textContent = error.status === 429
      ? `Too many attempts. Retry in ${error.retryAfter || "a few"} s.` : error.message;
  }
});

$("logout").addEventListener("click", async () => {
  try { await api("POST", "/api/auth/logout"); } catch { /* the cookie is cleared either way */ }
  history.replaceState(null, "", location.pathname);
  showLogin();
});

// ---------------------------------------------------------------------------------------------
// Pickers and the chat list

async function loadPickers() {
  const [models, workflows] = await Promise.all([api("GET", "/api/models"), api("GET", "/api/workflows")]);
  state.models = models.data;
  state.defaultModel = (models.data.find((m) => m.default) || models.data[0] || {}).id;
  const modelPicker = $("model-picker");
  modelPicker.replaceChildren(...models.data.map((m) => new Option(m.id, m.id, m.default, m.default)));
  const workflowPicker = $("workflow-picker");
  workflowPicker.replaceChildren(new Option("None", ""), ...workflows.data.map((w) => new Option(w.name, w.id)));
  $("workflow-label").hidden = workflows.data.length === 0;
  $("pickers").hidden = false;
}

async function loadChats() {
  const { data } = await api("GET", "/api/chats?limit=100");
  state.chats = data; // newest first
  renderChatList();
}

function renderChatList() {
  const list = $("chat-list");
  list.replaceChildren(...state.chats.map((chat) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "chat-link";
    button.textContent = chat.title || "Untitled chat";
    button.title = new Date(chat.createdAt).toLocaleString();
    if (state.chat && state.chat.id === chat.id) button.setAttribute("aria-current", "page");
    button.addEventListener("click", () => { openChat(chat); closeSidebar(); });
    item.append(button);
    return item;
  }));
}

function newChat() {
  stopStreaming();
  state.chat = null;
  state.oldestId = null;
  state.hasOlder = false;
  history.replaceState(null, "", location.pathname);
  $("messages").replaceChildren();
  $("empty").hidden = false;
  $("model-picker").value = state.defaultModel || "";
  $("workflow-picker").value = "";
  renderChatList();
  $("input").focus();
}

$("new-chat").addEventListener("click", () => { newChat(); closeSidebar(); });

function closeSidebar() {
  document.body.classList.remove("sidebar-open");
  $("toggle-chats").setAttribute("aria-expanded", "false");
}
$("scroller").addEventListener("click", closeSidebar);
document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeSidebar(); });
$("toggle-chats").addEventListener("click", () => {
  const open = document.body.classList.toggle("sidebar-open");
  $("toggle-chats").setAttribute("aria-expanded", String(open));
});

// ---------------------------------------------------------------------------------------------
// Messages

async function openChat(chat) {
  stopStreaming();
  state.chat = chat;
  history.replaceState(null, "", `#${chat.id}`);
  if (chat.modelId && state.models.some((m) => m.id === chat.modelId)) $("model-picker").value = chat.modelId;
  $("workflow-picker").value = chat.workflowId || "";
  renderChatList();
  $("messages").replaceChildren();
  $("empty").hidden = true;
  const { data, meta } = await api("GET", `/api/chats/${chat.id}/messages?order=desc&limit=${PAGE}`);
  const messages = data.slice().reverse();
  state.oldestId = messages.length ? messages[0].id : null;
  state.hasOlder = meta.total > data.length;
  let pending = null;
  for (const message of messages) {
    const view = appendMessage(message);
    if (message.role === "assistant" && ACTIVE.has(message.status)) pending = view;
  }
  $("empty").hidden = messages.length > 0;
  scrollToEnd();
  if (pending) attach(pending);
  fillViewport();
}

async function loadOlder() {
  if (!state.chat || !state.hasOlder || state.loadingOlder || !state.oldestId) return;
  state.loadingOlder = true;
  $("older").hidden = false;
  const chatId = state.chat.id;
  try {
    const { data, meta } = await api("GET",
      `/api/chats/${chatId}/messages?order=desc&limit=${PAGE}&before=${state.oldestId}`);
    if (!state.chat || state.chat.id !== chatId) return;
    const scroller = $("scroller");
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    const list = $("messages");
    const first = list.firstChild;
    for (const message of data.slice().reverse()) list.insertBefore(messageElement(message).element, first);
    if (data.length) state.oldestId = data[data.length - 1].id;
    state.hasOlder = meta.total > data.length;
    scroller.scrollTop = scroller.scrollHeight - fromBottom; // keep what the reader was looking at
  } catch (error) {
    showError(error);
  } finally {
    state.loadingOlder = false;
    $("older").hidden = true;
  }
  fillViewport();
}

/** Load older pages until the scroller can scroll (else no scroll event would ever ask for them). */
function fillViewport() {
  const scroller = $("scroller");
  if (state.hasOlder && !state.loadingOlder && scroller.scrollHeight <= scroller.clientHeight) loadOlder();
}

$("scroller").addEventListener("scroll", () => {
  if ($("scroller").scrollTop < 120) loadOlder();
}, { passive: true });

function nearEnd() {
  const s = $("scroller");
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}

function scrollToEnd() {
  const s = $("scroller");
  s.scrollTop = s.scrollHeight;
}

function appendMessage(message) {
  const view = messageElement(message);
  $("messages").append(view.element);
  $("empty").hidden = true;
  return view;
}

function messageElement(message) {
  const view = new MessageView(message);
  view.show(message);
  return view;
}

const STATUS_LABELS = { cancelled: "Stopped", failed: "Failed", queued: "Waiting…", in_progress: "Writing…" };

class MessageView {
  constructor(message) {
    this.id = message.id;
    this.chatId = message.chatId;
    this.element = document.createElement("li");
    this.element.className = `message ${message.role}`;
    this.element.dataset.messageId = message.id;
    this.element.view = this; // for the citation dialog
    const role = document.createElement("div");
    role.className = "role";
    role.textContent = message.role === "user" ? "You" : "Threadline";
    this.body = document.createElement("div");
    this.body.className = "body";
    this.status = document.createElement("div");
    this.status.className = "status";
    this.element.append(role, this.body, this.status);
    this.steps = null;
    this.text = "";
    this.lastEventId = null;
    this.pendingFrame = 0;
    this.citations = [];
  }

  show(message) {
    this.text = message.content;
    this.citations = message.citations || [];
    this.element.dataset.status = message.status;
    this.element.setAttribute("aria-busy", String(ACTIVE.has(message.status)));
    this.status.textContent = STATUS_LABELS[message.status] || "";
    this.render();
    if (!ACTIVE.has(message.status) && this.steps) this.steps.open = false;
  }

  render() {
    this.pendingFrame = 0;
    let text = clean(this.text);
    // A numbered mark right after each quoted passage (after the text, when the quote is not in it).
    const trailing = [];
    this.citations.forEach((citation, i) => {
      const quote = clean(citation.quote);
      const at = quote ? text.indexOf(quote) : -1;
      if (at >= 0) text = text.slice(0, at + quote.length) + citationMark(i + 1) + text.slice(at + quote.length);
      else trailing.push(citationMark(i + 1));
    });
    if (trailing.length) text += `\n\n${trailing.join(" ")}`;
    this.body.innerHTML = renderMarkdown(text);
  }

  scheduleRender(received) {
    if (this.pendingFrame) return;
    this.pendingFrame = requestAnimationFrame(() => {
      const follow = nearEnd();
      this.render();
      if (follow) scrollToEnd();
      if (received !== undefined && !this.painted) {
        this.painted = true;
        const painted = performance.now();
        performance.measure("threadline:first-token", { start: received, end: painted });
        window.threadline.timings.push({ messageId: this.id, received, painted });
      }
    });
  }

  stepList() {
    if (!this.steps) {
      this.steps = document.createElement("details");
      this.steps.className = "steps";
      this.steps.open = true;
      const summary = document.createElement("summary");
      summary.textContent = "Steps";
      this.stepItems = document.createElement("ol");
      this.steps.append(summary, this.stepItems);
      this.element.insertBefore(this.steps, this.status);
    }
    return this.stepItems;
  }

  step(data, done) {
    const list = this.stepList();
    let item = list.querySelector(`[data-index="${Number(data.index)}"]`);
    if (!item) {
      item = document.createElement("li");
      item.dataset.index = String(Number(data.index));
      list.append(item);
    }
    item.className = `step ${done ? data.status : "running"}`;
    const kind = data.kind === "tool_call" ? "Tool" : "Model";
    const name = document.createElement("span");
    name.className = "step-name";
    name.textContent = `${kind}: ${data.name}`;
    const state = document.createElement("span");
    state.className = "step-state";
    state.textContent = done ? data.status : "running…";
    item.replaceChildren(name, " ", state);
    if (data.arguments && Object.keys(data.arguments).length) {
      const args = document.createElement("code");
      args.className = "step-args";
      args.textContent = JSON.stringify(data.arguments);
      item.append(" ", args);
    }
    this.steps.querySelector("summary").textContent = `Steps (${list.children.length})`;
  }

  resetAttempt() {
    this.text = "";
    this.citations = [];
    if (this.steps) this.stepItems.replaceChildren();
    this.render();
  }

  /** Apply one stream event; returns true when it ended the stream. */
  apply(type, data, id, received) {
    if (id) this.lastEventId = id;
    switch (type) {
      case "run.started":
        this.resetAttempt();
        this.element.dataset.status = "in_progress";
        this.status.textContent = STATUS_LABELS.in_progress;
        return false;
      case "step.started":
        this.step(data, false);
        return false;
      case "step.completed":
        this.step(data, true);
        return false;
      case "message.delta":
        this.text += data.text;
        this.scheduleRender(received);
        return false;
      case "message.completed":
        this.show(data);
        return true;
      case "run.failed":
      case "run.cancelled":
        this.show(data.message);
        return true;
      case "error":
        return false; // the server lost its log reader: resume from the last id
      default:
        return false;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Sending, streaming, stopping

function setStreaming(view) {
  state.streaming = view;
  $("stop").hidden = !view;
  $("send").disabled = Boolean(view);
}

function stopStreaming() {
  const view = state.streaming;
  if (view && view.source) view.source.close();
  if (view && view.abort) view.abort.abort();
  setStreaming(null);
  connection(false);
}

function finished(view) {
  if (state.streaming === view) setStreaming(null);
  if (view.source) view.source.close();
  view.source = null;
  connection(false);
  $("input").focus();
}

const STREAM_EVENTS = ["run.queued", "run.started", "step.started", "step.completed", "message.delta",
  "message.completed", "run.failed", "run.cancelled", "error"];

/** Follow an answer with EventSource: from the start (reload) or after the last event seen. */
function attach(view) {
  setStreaming(view);
  const after = view.lastEventId ? `?last_event_id=${encodeURIComponent(view.lastEventId)}` : "";
  const source = new EventSource(`/api/chats/${view.chatId}/messages/${view.id}/stream${after}`);
  view.source = source;
  for (const type of STREAM_EVENTS) {
    source.addEventListener(type, (event) => {
      if (type === "error" && !event.data) return; // a connection error, not the server's event
      connection(false);
      if (view.apply(type, JSON.parse(event.data), event.lastEventId, performance.now())) finished(view);
    });
  }
  source.addEventListener("open", () => connection(false));
  source.addEventListener("error", (event) => {
    if (event.data) return;
    if (source.readyState === EventSource.CLOSED) {
      // The server refused (401, 404 …): say so, and let a reload or a new send try again.
      finished(view);
      refreshMessage(view);
    } else {
      connection(true); // EventSource reconnects by itself, with Last-Event-ID
    }
  });
}

async function refreshMessage(view) {
  try {
    const { data } = await api("GET", `/api/chats/${view.chatId}/messages/${view.id}`);
    view.show(data);
    if (ACTIVE.has(data.status)) banner("Lost the answer's stream; reload the page to follow it again.");
  } catch (error) {
    showError(error);
  }
}

async function send(text) {
  if (!state.chat) {
    const title = text.replace(/\s+/g, " ").trim().slice(0, 60);
    const { data } = await api("POST", "/api/chats",
      { title, modelId: $("model-picker").value || null, workflowId: $("workflow-picker").value || null });
    state.chat = data;
    state.chats.unshift(data);
    history.replaceState(null, "", `#${data.id}`);
    renderChatList();
  }
  const chatId = state.chat.id;
  const body = {
    content: text, modelId: $("model-picker").value, userId: state.user.id,
    workflowId: $("workflow-picker").value || null,
  };
  const abort = new AbortController();
  let response;
  try {
    response = await fetch(`/api/chats/${chatId}/messages`, {
      method: "POST", credentials: "same-origin", signal: abort.signal,
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "The server cannot be reached. Check your connection and send again.");
  }
  if (!response.ok) throw await failure(response);
  $("input").value = "";
  let view = null;
  let ended = false;
  try {
    await readEvents(response, (event) => {
      const received = performance.now();
      const data = event.data ? JSON.parse(event.data) : null;
      if (event.type === "message.created") {
        const posted = data.data;
        appendMessage(posted);
        view = appendMessage(posted.response);
        view.abort = abort;
        setStreaming(view);
        scrollToEnd();
        return;
      }
      if (view && view.apply(event.type, data, event.id, received)) {
        ended = true;
        finished(view);
      }
    });
  } catch (error) {
    if (abort.signal.aborted) return;
  }
  if (view && !ended && state.streaming === view) {
    view.abort = null;
    connection(true);
    attach(view); // the connection broke: resume after the last event seen, nothing twice
  }
}

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("input").value;
  if (!text.trim() || state.streaming) return;
  $("send").disabled = true;
  try {
    await send(text);
  } catch (error) {
    showError(error);
  } finally {
    if (!state.streaming) $("send").disabled = false;
  }
});

$("input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("stop").addEventListener("click", async () => {
  const view = state.streaming;
  if (!view) return;
  $("stop").disabled = true;
  try {
    const { data } = await api("POST", `/api/chats/${view.chatId}/messages/${view.id}/cancel`, {});
    view.show(data);
    if (view.abort) view.abort.abort();
    finished(view);
  } catch (error) {
    if (error.status === 404 || error.status === 405) {
      banner("This server cannot stop an answer yet; it will finish on its own.");
    } else if (error.status !== 409) { // 409: it had already finished; the stream brings the end
      showError(error);
    }
  } finally {
    $("stop").disabled = false;
  }
});

// ---------------------------------------------------------------------------------------------
// Citations

$("messages").addEventListener("click", (event) => {
  const mark = event.target.closest("button.cite");
  if (!mark) return;
  const item = mark.closest("li.message");
  const view = item && item.view;
  const citation = view && view.citations[Number(mark.dataset.cite) - 1];
  if (!citation) return;
  $("citation-title").textContent = `Source ${mark.dataset.cite}`;
  $("citation-doc").textContent = citation.documentName || "A document that is no longer available";
  $("citation-version").textContent = citation.documentVersion ? `version ${citation.documentVersion}` : "";
  $("citation-quote").textContent = citation.quote;
  $("citation-path").textContent = citation.path || "";
  $("citation").showModal();
});

// ---------------------------------------------------------------------------------------------
// Start

window.addEventListener("online", () => connection(false));

(async function start() {
  try {
    const { data } = await api("GET", "/api/auth/me");
    await signedIn(data);
  } catch (error) {
    if (error.status === 401) showLogin();
    else { showLogin(); showError(error); }
  }
  document.body.dataset.ready = "true";
})();
