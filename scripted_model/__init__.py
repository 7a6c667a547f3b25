"""Deterministic OpenAI-compatible chat model for development, tests and benchmarks.

Run it with `python -m scripted_model --port 8090` and point an OpenAI
client at http://127.0.0.1:8090/v1; replies follow the rules in `rules.py`.
"""

from .rules import LABEL, Reply, ToolCall, reply
from .server import create_app, serve

__all__ = ["LABEL", "Reply", "ToolCall", "create_app", "reply", "serve"]
