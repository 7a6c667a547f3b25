"""v1-threads: /v1/threads with UUID thread ids, tenants, direct messages and the AI (seed 004);
/v1/memories beside them."""
from api.dialects.v1_threads.routes import DIALECT, blp, memories_blp

__all__ = ["DIALECT", "blp", "memories_blp"]
