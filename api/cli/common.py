"""What the command groups share: comma-separated option values and service errors as click errors."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import click

from shared.errors import ThreadlineError


def split_list(value: str | None) -> list[str] | None:
    """``"a, b"`` → ``["a", "b"]``; ``None`` (option not given) stays None, ``""`` is an empty list."""
    return [item.strip() for item in value.split(",") if item.strip()] if value is not None else None


@contextmanager
def service_errors() -> Iterator[None]:
    """A ThreadlineError (with its field errors, if any) or a ValueError becomes a ClickException:
    one line on stderr and exit status 1 instead of a traceback."""
    try:
        yield
    except ThreadlineError as exc:
        details = "; ".join(f"{name}: {' '.join(problems)}" for name, problems in exc.fields.items())
        raise click.ClickException(f"{exc.message} {details}".strip()) from exc
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
