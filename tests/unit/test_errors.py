"""The error pipeline in process: one Problem with located field errors, each dialect's renderer and
status mapping kept as data on its app (two apps never share or pile up registrations)."""
from __future__ import annotations

import pytest

from api import create_app
from api.errors import EXTENSION, FieldError, Problem, from_fields, from_webargs

pytestmark = pytest.mark.core


def test_each_app_keeps_its_own_dialects():
    first, second = create_app(), create_app()
    assert first.extensions[EXTENSION] is not second.extensions[EXTENSION]
    assert len(first.extensions[EXTENSION]) == len(second.extensions[EXTENSION]) == 7  # ai, chats ×5 (chats, auth, models, workflows, memories), v1
    prefixes = [prefix for prefix, _ in first.extensions[EXTENSION]]
    assert prefixes == sorted(prefixes, key=len, reverse=True)  # the longest prefix wins


def test_webargs_errors_keep_their_location():
    errors = from_webargs({"json": {"content": {"text": ["Missing data for required field."]}},
                           "query": {"limit": ["Not a valid integer."]}, "view_args": {"thread_id": ["Not a valid UUID."]},
                           "headers": {"Prefer": ["Longer than maximum length 1000."]}})
    assert errors == [FieldError(("body", "content", "text"), "Missing data for required field.", "missing"),
                      FieldError(("query", "limit"), "Not a valid integer.", "int_parsing"),
                      FieldError(("path", "thread_id"), "Not a valid UUID.", "uuid_parsing"),
                      FieldError(("header", "Prefer"), "Longer than maximum length 1000.")]


@pytest.mark.parametrize("prefix, status, field, body", [
    ("/api/v1/ai/threads/1/messages", 422, "model_id", {"message": "Unknown model 'x'.", "code": "validation_failed",
                                                         "errors": {"model_id": ["Unknown."]}}),
    ("/api/chats/1/messages", 400, "modelId", {"statusCode": 400, "error": "Bad Request",
                                                "message": "Unknown model 'x'.", "details": {"modelId": ["Unknown."]}}),
    ("/v1/threads/1/user_message", 422, "model_id", {"detail": [{"loc": ["body", "model_id"], "msg": "Unknown.",
                                                                  "type": "value_error"}]}),
])
def test_a_service_error_in_core_words_is_rendered_in_each_dialects(prefix, status, field, body):
    app = create_app()
    problem = Problem(422, "validation_failed", "Unknown model 'x'.", from_fields({"model_id": ["Unknown."]}))
    with app.test_request_context(prefix):
        from api.errors import dialect_for

        dialect = dialect_for(prefix)
        adapted = dialect.adapt(problem)
        assert adapted.status == status and adapted.errors[0].loc == ("body", field)
        assert dialect.render(adapted) == body
    assert problem.status == 422 and problem.errors[0].loc == ("body", "model_id")  # the original is untouched
