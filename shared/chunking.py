"""Split a document into search-sized chunks: markdown by headings, then by paragraphs.

Chunks are what the docs tools return and what citations point into, so each one should be a
readable passage (about 1000-1500 characters) that carries its heading path ("Guide > Install").
Pure functions, no I/O: easy to test and cheap to run on every ingest.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

TARGET_CHARS = 1000  # start a new chunk once this much text has gathered ...
MAX_CHARS = 1500  # ... and never let one grow beyond this (a longer paragraph is split)
HEADING_SEPARATOR = " > "
HEADING_MAX_CHARS = 500  # the column's size

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Chunk:
    heading: str
    content: str


def title_of(text: str) -> str | None:
    """The first level-1 heading of a markdown text, if it has one (used as the document's name)."""
    for level, title, _ in _sections(text):
        if level == 1 and title:
            return title
    return None


def chunk_text(text: str, *, markdown: bool = True, target: int = TARGET_CHARS, limit: int = MAX_CHARS) -> list[Chunk]:
    """Chunks of ``text`` in document order. Plain text (``markdown=False``) has no headings."""
    text = normalize(text)
    if not markdown:
        return [Chunk("", body) for body in _pack(_blocks(text.split("\n")), target, limit)]
    chunks: list[Chunk] = []
    path: list[tuple[int, str]] = []
    for level, title, lines in _sections(text):
        if level:
            path = [(lvl, name) for lvl, name in path if lvl < level] + [(level, title)]
        heading = HEADING_SEPARATOR.join(name for _, name in path if name)[:HEADING_MAX_CHARS]
        chunks.extend(Chunk(heading, body) for body in _pack(_blocks(lines), target, limit))
    return chunks


def normalize(text: str) -> str:
    """One newline convention and no byte-order mark, so hashes and offsets are stable."""
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _sections(text: str):
    """Yield (heading level or 0, heading title, body lines) for each heading-delimited section."""
    level, title, lines = 0, "", []
    fence: str | None = None
    for line in text.split("\n"):
        opening = _FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            lines.append(line)
            continue
        if opening:
            fence = opening.group(1)
            lines.append(line)
            continue
        heading = _ATX.match(line)
        if heading:
            yield level, title, lines
            level, title, lines = len(heading.group(1)), (heading.group(2) or "").strip(), []
        else:
            lines.append(line)
    yield level, title, lines


def _blocks(lines: list[str]) -> list[str]:
    """Paragraphs (blank-line separated), keeping fenced code blocks whole."""
    blocks: list[str] = []
    current: list[str] = []
    fence: str | None = None
    for line in lines:
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
        elif fence is not None and opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
            fence = None
        elif fence is None and not line.strip():
            if current:
                blocks.append("\n".join(current).rstrip())
                current = []
            continue
        current.append(line)
    if current:
        blocks.append("\n".join(current).rstrip())
    return [block for block in blocks if block.strip()]


def _pack(blocks: list[str], target: int, limit: int) -> list[str]:
    """Greedily join blocks into chunks of about ``target`` and at most ``limit`` characters."""
    chunks: list[str] = []
    current = ""
    for block in blocks:
        for piece in _split_long(block, limit):
            joined = f"{current}\n\n{piece}" if current else piece
            if current and (len(joined) > limit or len(current) >= target):
                chunks.append(current)
                joined = piece
            current = joined
    if current:
        chunks.append(current)
    return chunks


def _split_long(block: str, limit: int) -> list[str]:
    """A block longer than ``limit`` split at sentence ends, then at spaces, then anywhere."""
    if len(block) <= limit:
        return [block]
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(block):
        while len(sentence) > limit:
            cut = sentence.rfind(" ", 0, limit)
            cut = cut if cut > limit // 2 else limit
            head, sentence = sentence[:cut].rstrip(), sentence[cut:].lstrip()
            if current:
                pieces.append(current)
                current = ""
            pieces.append(head)
        if current and len(current) + 1 + len(sentence) > limit:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return [piece for piece in pieces if piece]
