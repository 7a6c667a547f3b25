"""Permission names and roles: ``user`` is the default and leaves out the moderators' reports.*;
role names expand where permissions are expected; anything else is refused with the known names."""
from __future__ import annotations

import pytest

from shared import permissions


def test_roles_expand_and_mix_with_names():
    assert permissions.validate(["moderator"]) == sorted(permissions.MODERATOR)
    assert permissions.validate(["user", "reports.read"]) == sorted({*permissions.USER, "reports.read"})
    assert permissions.validate(["memories.read", "memories.read"]) == ["memories.read"]


def test_the_default_role_cannot_moderate():
    assert "reports.read" not in permissions.USER and "reports.manage" not in permissions.USER
    assert {"memories.read", "memories.delete"} <= set(permissions.USER)
    assert set(permissions.ALL) == set(permissions.MODERATOR)


def test_unknown_names_are_refused_with_the_known_ones_and_the_roles():
    with pytest.raises(ValueError, match=r"unknown permission\(s\): admin; known: .*reports.manage.*\(or a role: user, moderator\)"):
        permissions.validate(["admin"])
