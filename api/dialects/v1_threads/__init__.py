"""v1-threads: /v1/threads with UUID thread ids, tenants, direct messages and the AI (seed 004)."""
from api.dialects.v1_threads import routes
from api.dialects.v1_threads.routes import blp, render_error

__all__ = ["blp", "render_error", "routes"]
