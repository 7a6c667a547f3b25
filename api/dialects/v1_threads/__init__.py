"""v1-threads: /v1/threads with UUID thread ids, tenants, direct messages and the AI (seed 004)."""
from api.dialects.v1_threads.routes import DIALECT, blp

__all__ = ["DIALECT", "blp"]
