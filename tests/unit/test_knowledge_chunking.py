"""Chunking: markdown split by headings then paragraphs, heading paths kept, sizes bounded."""
from __future__ import annotations

import re

from shared.chunking import MAX_CHARS, chunk_text, normalize, title_of
from shared.services.knowledge import content_hash

GUIDE = """# Guide

Welcome to the guide.

## Install

Run make run.

```bash
# this is a shell comment, not a heading
make run
```

### On Linux

Use the package manager.

## Use

Post a message.
"""


def test_heading_paths_follow_the_nesting():
    chunks = chunk_text(GUIDE)
    assert [c.heading for c in chunks] == ["Guide", "Guide > Install", "Guide > Install > On Linux", "Guide > Use"]
    assert chunks[0].content == "Welcome to the guide."
    assert chunks[3].content == "Post a message."


def test_a_fenced_code_block_is_not_split_and_its_hashes_are_not_headings():
    install = chunk_text(GUIDE)[1]
    assert "```bash\n# this is a shell comment, not a heading\nmake run\n```" in install.content
    assert not any("shell comment" in c.heading for c in chunk_text(GUIDE))


def test_long_sections_are_split_by_paragraph_within_the_limit():
    paragraphs = [f"Paragraph {i} " + "word " * 60 for i in range(30)]
    chunks = chunk_text("# Big\n\n" + "\n\n".join(paragraphs))
    assert len(chunks) > 3
    assert all(len(c.content) <= MAX_CHARS and c.heading == "Big" for c in chunks)
    assert all(len(c.content) >= 900 for c in chunks[:-1])  # packed to about the target, not one per paragraph
    rebuilt = "\n\n".join(c.content for c in chunks)
    assert rebuilt == "\n\n".join(p.rstrip() for p in paragraphs)  # nothing lost, order kept


def test_one_huge_paragraph_is_split_at_sentence_ends():
    sentence = "This sentence is about forty-five characters. "
    chunks = chunk_text(sentence * 100)
    assert len(chunks) >= 3 and all(len(c.content) <= MAX_CHARS for c in chunks)
    assert all(c.content.endswith(".") for c in chunks)
    assert re.sub(r"\s+", " ", " ".join(c.content for c in chunks)) == (sentence * 100).strip()


def test_a_word_longer_than_the_limit_is_cut():
    chunks = chunk_text("x" * (MAX_CHARS * 2 + 10))
    assert [len(c.content) for c in chunks] == [MAX_CHARS, MAX_CHARS, 10]


def test_heading_only_sections_make_no_empty_chunks_and_text_before_a_heading_counts():
    chunks = chunk_text("Preface line.\n\n# Title\n\n## Empty\n\n## Full\n\nBody.")
    assert [(c.heading, c.content) for c in chunks] == [("", "Preface line."), ("Title > Full", "Body.")]


def test_plain_text_has_no_headings():
    chunks = chunk_text("# not a heading in a .txt file\n\nsecond paragraph", markdown=False)
    assert [(c.heading, c.content) for c in chunks] == [("", "# not a heading in a .txt file\n\nsecond paragraph")]


def test_title_and_normalisation():
    assert title_of(GUIDE) == "Guide"
    assert title_of("no heading here") is None
    assert title_of("## Second level only") is None
    assert normalize("\ufeffa\r\nb\rc") == "a\nb\nc"
    assert content_hash("a\r\nb") == content_hash("a\nb") != content_hash("a\nc")
    assert chunk_text("# T #\n\ntext")[0].heading == "T"  # closing hashes are not part of the title


def test_the_citation_example_in_the_docs_is_true():
    """docs/knowledge-base.md shows a citation of its own Versions section: its offset must be right."""
    import json

    from shared.config import ROOT

    text = (ROOT / "docs" / "knowledge-base.md").read_text()
    example = json.loads(re.search(r"```json\n(\{\n  \"chunk_id\".*?\})\n```", text, re.S).group(1))
    [versions] = [c for c in chunk_text(text) if c.heading == "The knowledge base > Versions"]
    assert versions.content[example["offset"]:example["offset"] + example["length"]] == example["quote"]
    assert title_of(text) == example["document_name"] and example["path"] == "knowledge-base.md"
