// A small, safe Markdown renderer for chat messages.
//
// Safety comes from the order of work: the text is HTML-escaped FIRST, and only then are a few
// constructs turned into tags this file writes itself (paragraphs, fenced code blocks, inline code,
// **bold**, *italic*, [links](https://…) with http(s) targets only, - and 1. lists, # headings).
// Nothing from the message can become a tag or an attribute of its own, so a message containing
// <script> or <img onerror=…> shows as text. Private-use characters are the renderer's placeholders;
// they are removed from the input first.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const PRIVATE = /[\uE000-\uE003]/g;

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

/** Remove the renderer's placeholder characters from untrusted text. */
export function clean(text) {
  return String(text ?? "").replace(PRIVATE, "");
}

/** A citation mark placeholder (\uE002n\uE003), rendered as a numbered button by renderMarkdown. */
export function citationMark(n) {
  return `\uE002${n}\uE003`;
}

function inline(escaped) {
  const codes = [];
  let out = escaped.replace(/`([^`\n]+)`/g, (_, code) => {
    codes.push(code);
    return `\uE000${codes.length - 1}\uE001`;
  });
  // Links: the target is already escaped text; only http(s) URLs without spaces become links.
  out = out.replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s()]+)\)/g,
    (_, label, url) => `<a href="${url}" rel="noopener noreferrer nofollow" target="_blank">${label}</a>`);
  out = out.replace(/\*\*(?=\S)([^*\n]*?\S)\*\*/g, "<strong>$1</strong>");
  out = out.replace(/(^|[^*\w])\*(?=\S)([^*\n]*?\S)\*(?![*\w])/g, "$1<em>$2</em>");
  return out.replace(/\uE000(\d+)\uE001/g, (_, i) => `<code>${codes[Number(i)]}</code>`);
}

function marks(html) {
  return html.replace(/\uE002(\d+)\uE003/g,
    (_, n) => `<button type="button" class="cite" data-cite="${n}" aria-label="Source ${n}">${n}</button>`);
}

const FENCE = /^\s*(```|~~~)\s*([\w+-]*)\s*$/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*\d{1,9}[.)]\s+(.*)$/;
const HEADING = /^(#{1,6})\s+(.*)$/;

/**
 * Render untrusted Markdown to HTML. ``text`` may contain citation marks made by citationMark();
 * any other private-use placeholder characters must have been removed with clean().
 * An unclosed code fence (an answer still streaming) renders as a code block up to the end.
 */
export function renderMarkdown(text) {
  const lines = escapeHtml(String(text ?? "").replace(/[\uE000\uE001]/g, "")).split(/\r\n|\r|\n/);
  const html = [];
  let paragraph = [];
  let list = null; // {tag, items}
  const flushParagraph = () => {
    if (paragraph.length) html.push(`<p>${paragraph.map(inline).join("<br>")}</p>`);
    paragraph = [];
  };
  const flushList = () => {
    if (list) html.push(`<${list.tag}>${list.items.map((item) => `<li>${inline(item)}</li>`).join("")}</${list.tag}>`);
    list = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(FENCE);
    if (fence) {
      flushParagraph();
      flushList();
      const body = [];
      let j = i + 1;
      while (j < lines.length && !lines[j].trim().startsWith(fence[1])) body.push(lines[j++]);
      if (j >= lines.length) while (body.length && !body[body.length - 1].trim()) body.pop(); // still streaming
      const lang = fence[2] ? ` data-lang="${fence[2]}"` : "";
      html.push(`<pre class="code"${lang}><code>${body.join("\n")}</code></pre>`);
      i = j;
      continue;
    }
    if (!line.trim()) {
      flushParagraph();
      flushList();
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      flushParagraph();
      flushList();
      const level = Math.min(6, heading[1].length + 2);
      html.push(`<h${level}>${inline(heading[2])}</h${level}>`);
      continue;
    }
    const bullet = line.match(BULLET);
    const numbered = bullet ? null : line.match(NUMBERED);
    if (bullet || numbered) {
      flushParagraph();
      const tag = bullet ? "ul" : "ol";
      if (list && list.tag !== tag) flushList();
      if (!list) list = { tag, items: [] };
      list.items.push((bullet || numbered)[1]);
      continue;
    }
    if (list && /^\s{2,}\S/.test(line)) { // a continuation line of the last item
      list.items[list.items.length - 1] += " " + line.trim();
      continue;
    }
    flushList();
    paragraph.push(line);
  }
  flushParagraph();
  flushList();
  return marks(html.join(""));
}
