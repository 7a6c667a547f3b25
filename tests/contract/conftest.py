"""The seeds' user: ``user-123`` (seed 002's example body), the same demo user ``make run`` creates, so
the seed's requests and docs/api.md's curl examples run as written."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

DEMO = dict(id="user-123", email="demo@example.com", password="demo-password", tenant="demo")


@pytest.fixture(scope="session")
def demo_user(stack):
    from shared.services import identity

    user = identity.create_user(DEMO["email"], DEMO["tenant"], user_id=DEMO["id"], password=DEMO["password"])
    token, _ = identity.create_token(DEMO["email"], name="contract tests")
    return SimpleNamespace(**DEMO, tenant_id=user.tenant_id, token=token)
