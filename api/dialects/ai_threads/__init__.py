"""ai-threads: /api/v1/ai/threads, integer thread ids (seeds 000 and 001)."""
from api.dialects.ai_threads.routes import DIALECT, blp

__all__ = ["DIALECT", "blp"]
