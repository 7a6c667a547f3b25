"""shared/storable.py: the values a model may produce that PostgreSQL refuses, made storable."""
from __future__ import annotations

import math
from datetime import datetime, timezone

from shared import storable
from shared.models import StepStatus
from shared.services.runs import Outcome, StepRecord


def test_nul_becomes_the_replacement_character_and_other_text_is_kept():
    assert storable.text("a\x00b\x00") == "a\ufffdb\ufffd"
    assert storable.text("plain ünïcode") == "plain ünïcode"
    assert storable.text(None) is None


def test_json_loses_non_finite_numbers_and_nul_in_keys_and_strings():
    value = {"n": math.nan, "i": [math.inf, -math.inf, 1.5, 2], "k\x00": {"s": "x\x00"}, "b": True, "z": None}
    assert storable.json_value(value) == {"n": None, "i": [None, None, 1.5, 2], "k\ufffd": {"s": "x\ufffd"},
                                          "b": True, "z": None}


def test_an_outcome_is_cleaned_everywhere_it_is_stored():
    now = datetime.now(timezone.utc)
    step = StepRecord(index=0, kind="tool_call", name="update_context", arguments={"x": math.nan},
                      output="o\x00", status=StepStatus.COMPLETED, started_at=now, finished_at=now,
                      usage={"t": math.inf})
    cleaned = storable.outcome(Outcome(content="c\x00", citations=[{"q": "\x00"}], updated_context={"v": math.nan},
                                       steps=[step], usage={"u": math.nan}, error="e\x00"))
    assert (cleaned.content, cleaned.citations, cleaned.updated_context, cleaned.usage, cleaned.error) == (
        "c\ufffd", [{"q": "\ufffd"}], {"v": None}, {"u": None}, "e\ufffd")
    [s] = cleaned.steps
    assert (s.arguments, s.output, s.usage, s.started_at) == ({"x": None}, "o\ufffd", {"t": None}, now)
